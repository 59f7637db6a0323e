"""What a network is: the architecture spec, its serial forms, blocks, builder, references and
search spaces. Everything but ``blocks``/``builder`` is free of torch."""

from search_spaces.blockstring import from_string, to_string
from search_spaces.errors import MobilenasError, SpecError
from search_spaces.reference import REFERENCES, reference_spec
from search_spaces.serialize import from_dict, load_spec, load_spec_file, save_spec, to_dict
from search_spaces.space import SearchSpace
from search_spaces.spec import ArchSpec, BlockSpec, HeadSpec, Layer, StemSpec, make_divisible

__all__ = [
    "ArchSpec", "BlockSpec", "HeadSpec", "Layer", "MobilenasError",
    "REFERENCES", "SearchSpace", "SpecError", "StemSpec", "from_dict", "from_string",
    "load_spec", "load_spec_file", "make_divisible", "reference_spec", "save_spec", "to_dict",
    "to_string",
]
