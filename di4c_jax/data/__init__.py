"""Data: random-access sources ({'x0': int32[D], 'label'}), tokenizers, and the grain pipeline."""
from di4c_jax.data.bpe import BPETokenizer
from di4c_jax.data.digits import DigitsBuilder, digits_dataset, prepare_digits
from di4c_jax.data.documents import (FolderDocuments, RecordDocuments, hf_documents, tfds_documents,
                                     tokenized_documents, wrapped_dataset)
from di4c_jax.data.factory import DATASET_NAMES, load_dataset
from di4c_jax.data.packing import PackedSource, pack_documents, wrapped_blocks, write_blocks
from di4c_jax.data.pipeline import HostRows, make_dataset, make_iterator
from di4c_jax.data.sources import (ArraySource, DataInfo, TransformedSource, array_dataset, load_token_file,
                                   npy_dataset)
from di4c_jax.data.split import HeldOutSplit, SubsetSource, holdout_indices, split_source
from di4c_jax.data.text import folder_tokens, pystdlib_dataset, pystdlib_tokens
from di4c_jax.data.tfds_sources import lm1b_dataset, tfds_image_dataset
from di4c_jax.data.tokenizers import ByteTokenizer, CharTokenizer, check_tokenizer_spec, load_bpe
from di4c_jax.data.validate import check_integer_tokens, validate_tokens

__all__ = [
    "ArraySource",
    "BPETokenizer",
    "ByteTokenizer",
    "CharTokenizer",
    "DATASET_NAMES",
    "DataInfo",
    "DigitsBuilder",
    "FolderDocuments",
    "HeldOutSplit",
    "HostRows",
    "PackedSource",
    "RecordDocuments",
    "SubsetSource",
    "TransformedSource",
    "array_dataset",
    "check_integer_tokens",
    "check_tokenizer_spec",
    "digits_dataset",
    "folder_tokens",
    "hf_documents",
    "holdout_indices",
    "lm1b_dataset",
    "load_bpe",
    "load_dataset",
    "load_token_file",
    "make_dataset",
    "make_iterator",
    "npy_dataset",
    "pack_documents",
    "prepare_digits",
    "pystdlib_dataset",
    "pystdlib_tokens",
    "split_source",
    "tfds_documents",
    "tfds_image_dataset",
    "tokenized_documents",
    "validate_tokens",
    "wrapped_blocks",
    "wrapped_dataset",
    "write_blocks",
]
