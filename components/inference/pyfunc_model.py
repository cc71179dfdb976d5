"""The code MLflow logs as the pyfunc's model (models-from-code): loading the model runs this file, which only
names the class, instead of unpickling a `python_model.pkl` (a pickle runs whatever code it carries).
`components.inference.pyfunc.log_pyfunc_model` passes this file's path; the class lives in that module."""

import mlflow.models

from components.inference.pyfunc import LlavaUhdPyfunc

mlflow.models.set_model(LlavaUhdPyfunc())
