"""Builds a tfds dataset in ArrayRecord format, the format the trainer reads without TensorFlow.

  python -m big_vision_lite.tools.prepare_tfds coco_captions --data_dir /data/tfds
  python -m big_vision_lite.tools.prepare_tfds cifar10 --data_dir /data/tfds

Preparing most datasets needs TensorFlow (tfds encodes and downloads with it): install the
optional extra first, `pip install -e '.[prepare]'`. Some datasets need files downloaded by
hand (tfds names them and the folder to put them in: --manual_dir). Training reads the result
with config.input.data = dict(name=NAME, split='train', data_dir=DIR).
"""

import argparse


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("name", help="tfds dataset name, optionally with config/version (e.g. cifar10)")
  p.add_argument("--data_dir", required=True)
  p.add_argument("--manual_dir", default=None, help="folder with manually downloaded files")
  args = p.parse_args(argv)
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  try:
    builder = tfds.builder(args.name, data_dir=args.data_dir, file_format="array_record")
  except tfds.core.registered.DatasetNotFoundError as e:
    raise SystemExit(f"unknown tfds dataset {args.name!r}: {e}") from None
  config = tfds.download.DownloadConfig(manual_dir=args.manual_dir)
  try:
    builder.download_and_prepare(download_config=config)
  except ModuleNotFoundError as e:
    if "tensorflow" in str(e):
      raise SystemExit(f"preparing {args.name} needs TensorFlow: pip install -e '.[prepare]'")
    raise
  splits = {name: info.num_examples for name, info in builder.info.splits.items()}
  print(f"prepared {args.name} in ArrayRecord under {builder.data_dir}: {splits}")


if __name__ == "__main__":
  main()
