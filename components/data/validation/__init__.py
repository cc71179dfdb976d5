"""Validation of a LLaVA annotation file and the images it references -> valid / quarantine / image tables.

One streaming pass, bounded memory, nothing lost:

  annotation file --(llava_format: chunks)--> per-row check columns (vectorised: pyarrow / numpy)
        |                                       +--> distinct new image paths --> process pool: headers
        |                                             (read_header, EXIF-aware), size, pixel limit, mode,
        |                                             full decode (pixels.load_image) of a seeded sample
        v
  rows + reason bits --> valid.parquet (+ image width/height) | quarantine.parquet (reasons, raw JSON)
  check tables (every row / every image) --> Great Expectations suites --> verdict + GX report

Every rule is one `Rule` (rules.py): the stream routes rows with its vectorised predicate, and Great
Expectations evaluates the same rules over the complete check tables; nothing is published unless the two
agree reason by reason (suites.py), otherwise `ValidationEngineError` is raised.

Outputs (atomic: written under temporary names, renamed once verified) in `out_dir` (the quarantine tables
in `quarantine_dir` when one is given):
  valid.parquet       row, id, image (normalised path, null for text-only), conversations
                      (list<struct<from, value>>), n_turns, width, height (displayed size, EXIF applied)
  quarantine.parquet  row, id, image, n_turns, reason (primary), reasons (all), detail, raw_json, raw (bytes)
  images.parquet      one row per distinct valid image used by a valid row: path, width, height, format,
                      mode, orientation, full_decode (true: decoded in the sample; null: not sampled)
  bad_images.parquet  one row per distinct failing image: path, reason, reasons, detail, rows
and in `report_dir` (default `out_dir`): metrics.json (counts; rows_in == valid + quarantined),
gx_report.json (summary + GX's own result dicts, unexpected lists cut to a few examples), gx_report.html.

The package, one concept per module (this file re-exports the public API, so
`from components.data.validation import validate_annotations, ...` is the import to use):
  rules        reason codes and their bits, `Rule`, the annotation and image rule sets, supported modes
  annotations  the per-chunk check columns of the rows (vectorised) and image path normalisation
  images       image checks (headers, seeded full decode; they run in worker processes), the image table
  parsing      the annotation file as a stream of chunks, parsed here or in a child process
  outputs      the Parquet schemas of the output tables and their background writers
  suites       Great Expectations: the two suites, their results, the agreement check
  reports      `ValidationReport`, metrics.json, gx_report.json, gx_report.html
  run          the streaming run and the entry point, `validate_annotations`
"""

from .annotations import (
    annotation_checks,
    image_token_counts,
    normalize_image_path,
)
from .images import (
    IMAGE_RESULT_FIELDS,
    check_images,
    full_decode_sample,
)
from .outputs import (
    BAD_IMAGES_SCHEMA,
    IMAGES_SCHEMA,
    OUTPUT_FILES,
    QUARANTINE_SCHEMA,
    VALID_SCHEMA,
)
from .parsing import (
    sample_chunks,
)
from .reports import (
    REPORT_FILES,
    ValidationReport,
)
from .rules import (
    ANNOTATION_RULES,
    ANNOTATIONS_INDEX,
    IMAGE_REASONS,
    IMAGES_INDEX,
    MAX_SIDE,
    REASON_BIT,
    REASONS,
    Rule,
    decode_reasons,
    image_rules,
    supported_modes,
)
from .run import (
    MAX_WAITING,
    validate_annotations,
)
from .suites import (
    EXAMPLES,
    ValidationEngineError,
    evaluate_with_gx,
    import_gx,
    run_gx_suites,
)

__all__ = [
    "annotation_checks",
    "ANNOTATION_RULES",
    "ANNOTATIONS_INDEX",
    "BAD_IMAGES_SCHEMA",
    "check_images",
    "decode_reasons",
    "evaluate_with_gx",
    "EXAMPLES",
    "full_decode_sample",
    "IMAGE_REASONS",
    "IMAGE_RESULT_FIELDS",
    "image_rules",
    "image_token_counts",
    "IMAGES_INDEX",
    "IMAGES_SCHEMA",
    "import_gx",
    "MAX_SIDE",
    "MAX_WAITING",
    "normalize_image_path",
    "OUTPUT_FILES",
    "QUARANTINE_SCHEMA",
    "REASON_BIT",
    "REASONS",
    "REPORT_FILES",
    "Rule",
    "run_gx_suites",
    "sample_chunks",
    "supported_modes",
    "VALID_SCHEMA",
    "validate_annotations",
    "ValidationEngineError",
    "ValidationReport",
]
