# Types of the compiled module (sdcore/_ngram_kernel.pyx); use it through sdcore.kernel.
import numpy as np
import numpy.typing as npt

DTYPE_FLOAT32: int
DTYPE_FLOAT16: int
DTYPE_INT8: int

_Ints = npt.NDArray[np.int64]

class RowTable:
    rows: int
    dim: int
    dtype: int
    def __init__(self, shards: list[np.ndarray], starts: list[int], dtype: int, dim: int,
                 scales: list[np.ndarray]) -> None: ...

class NgramIndex:
    ngram_min: int
    ngram_max: int
    sub_min: int
    sub_max: int
    sub_buckets: int
    sub_all: bool
    vocab_size: int
    max_row: int
    def __init__(self, words: list[str], keys: npt.NDArray[np.uint64], rows: _Ints, ngram_min: int,
                 ngram_max: int, sub_min: int = 0, sub_max: int = 0, sub_buckets: int = 0,
                 sub_all: bool = False) -> None: ...
    def tokens(self, text: str) -> tuple[_Ints, _Ints]: ...
    def featurize(self, texts: list[str] | None, ids: _Ints | None = None,
                  offsets: _Ints | None = None) -> tuple[_Ints, _Ints, _Ints, _Ints]: ...
    def pool(self, table: RowTable, threads: int = 1, texts: list[str] | None = None, values: _Ints | None = None,
             offsets: _Ints | None = None, values_are_rows: bool = False,
             ) -> tuple[npt.NDArray[np.float32], _Ints, _Ints, _Ints]: ...

def simd() -> str: ...
def select_simd(portable: bool) -> None: ...
def half_to_float_portable(bits: npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]: ...
