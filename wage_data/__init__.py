"""The data sets WAGE is trained on, read from their standard on-disk formats without trusting them, and fetched
verified from their published sources (the ``wage-data`` command).

Every reader returns a :class:`Dataset` of raw uint8 NHWC pixels and int64 labels; :func:`to_inputs` scales a
batch to WAGE's ``[-1, 1]`` inputs (docs/contract.md §3). Every fault in a file is a :class:`DataError` whose
one-line message names the file. Needs NumPy; scikit-learn (digits), scipy (SVHN), pooch and tqdm (downloads) are
imported when used (the ``train`` extra)::

    from wage_data import load_dataset, to_inputs

    data = load_dataset("mnist", "~/data")   # or "digits" (embedded), "cifar10", "svhn"
    x = to_inputs(data.x_train[:128], data.max_value)   # float32 (128, 28, 28, 1) in [-1, 1]
"""

from wage_data.augment import augment_crop, augment_crop_flip
from wage_data.dataset import Dataset, data_fingerprint, hold_out_validation, pad_images, to_inputs
from wage_data.download import SOURCES as _SOURCES
from wage_data.download import ensure_dataset, fetch
from wage_data.files import DataError
from wage_data.readers import DATASETS as _DATASETS
from wage_data.readers import load_cifar10, load_dataset, load_digits_split, load_mnist
from wage_data.svhn import load_svhn

#: The data sets :func:`load_dataset` reads: ``"digits"`` (embedded), ``"mnist"``, ``"cifar10"``, ``"svhn"``.
DATASETS: tuple[str, ...] = _DATASETS
#: Each downloadable data set's base URLs, files with their published checksums, and the environment variable
#: that replaces the URLs (:class:`wage_data.download.Source`).
SOURCES = _SOURCES

__all__ = [
    "DATASETS",
    "SOURCES",
    "DataError",
    "Dataset",
    "augment_crop",
    "augment_crop_flip",
    "data_fingerprint",
    "ensure_dataset",
    "fetch",
    "hold_out_validation",
    "load_cifar10",
    "load_dataset",
    "load_digits_split",
    "load_mnist",
    "load_svhn",
    "pad_images",
    "to_inputs",
]
