"""Batch prediction for more than one machine, on Apache Beam: file patterns -> decoding (the app's function) ->
RunInference with a batched TFLite model handler -> sharded CSV or JSON Lines, error rows included.

    .venv-beam/bin/python -m cifarlab.beam_predict --input 'photos/**' --out preds/part --format csv
    ... --runner FlinkRunner --flink_master host:8081 --environment_type LOOPBACK   # any Beam runner's options

Runs on the DirectRunner unless told otherwise (docs/deployment.md has the cluster runs). Needs `make beam-venv`:
Beam's pins and TensorFlow's do not fit in one venv, and this path needs no TensorFlow.
"""
import argparse

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from .batch import BATCH, Writer, decode_many
from .modelfile import read_meta
from .inference import Classifier

ERRORS = "errors"  # the tag of files that could not be decoded


class TFLiteModelHandler(ModelHandler):
    """Beam's RunInference has no TFLite handler: this one loads any model file the app serves (a .tflite needs only
    LiteRT) once per worker and classifies batches of up to batch_size images with the app's Classifier.predict."""

    def __init__(self, model_path, batch_size=BATCH):
        super().__init__()
        self.model_path, self.batch_size = model_path, batch_size

    def load_model(self):
        return Classifier.from_path(self.model_path, chunk_images=self.batch_size)

    def run_inference(self, batch, model, inference_args=None):
        predictions = model.predict(np.stack(batch))
        return [PredictionResult(pixels, prediction) for pixels, prediction in zip(batch, predictions)]

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": self.batch_size}

    def share_model_across_processes(self):
        return True  # one copy of the interpreter per machine, not per thread


class Decode(beam.DoFn):
    """(path, bytes) -> (path, pixels), or (path, error message) on the ERRORS output."""

    def process(self, element):
        ((path, pixels, error),) = decode_many([element])
        if error is None:
            yield path, pixels
        else:
            yield beam.pvalue.TaggedOutput(ERRORS, (path, error))


def build(pipeline, pattern, out, model_path, suffix=".csv", batch_size=BATCH):
    """The pipeline's steps on `pipeline`: read, decode, classify, format, write shards named out-SSSSS-of-NNNNN."""
    writer = Writer(suffix, read_meta(model_path)["class_names"])
    files = (pipeline
             | "Match" >> fileio.MatchFiles(pattern)
             | "Open" >> fileio.ReadMatches()
             | "Read" >> beam.Map(lambda f: (f.metadata.path, f.read())))
    decoded = files | "Decode" >> beam.ParDo(Decode()).with_outputs(ERRORS, main="images")
    rows = (decoded.images
            | "Classify" >> RunInference(KeyedModelHandler(TFLiteModelHandler(model_path, batch_size)))
            | "Format" >> beam.MapTuple(lambda path, result: writer.row(path, result.inference)))
    refused = decoded[ERRORS] | "Refusals" >> beam.MapTuple(lambda path, error: writer.row(path, error=error))
    return ((rows, refused)
            | "Together" >> beam.Flatten()
            | "Write" >> beam.io.WriteToText(out, file_name_suffix=suffix, header=writer.header() or None,
                                             append_trailing_newlines=False))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="file pattern, e.g. 'photos/**' or gs://bucket/images/*.jpg")
    p.add_argument("--out", required=True, help="output prefix; shards are OUT-00000-of-0000N.csv")
    p.add_argument("--model", default="model/cifar10_cnn_int8.tflite", help="model file the app serves")
    p.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    p.add_argument("--batch", type=int, default=BATCH, help="images per model call")
    args, beam_args = p.parse_known_args(argv)
    with beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
        build(pipeline, args.input, args.out, args.model, f".{args.format}", args.batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
