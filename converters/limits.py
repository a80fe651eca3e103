"""Every bound the weight-file reader puts on an untrusted file, in one place.

A weight file is untrusted input: a few kilobytes of pickle or zip can ask for gigabytes (a
compressed member, a bytearray of 16 GB, a million-fold copy of one list, a tuple whose hash visits
2**100 nodes). The reader checks these bounds *before* it allocates or decompresses, so that a
crafted file ends in a `WeightFileError` within a few seconds and well under 1 GiB beyond the
file's own size, instead of exhausting memory or hanging.

Each bound is far above what real YOLO-NAS files need; for scale, the whole-model pickle of
YOLO-NAS L (`data.pkl`) is about 250 KB and 105,000 opcodes, with ~1,150 tensor storages, and
super-gradients checkpoints (net + EMA + optimizer state) stay within a few times that. A file that
passes every bound but is still not a model fails later, with the usual "not YOLO-NAS" errors.
docs/file_formats.md#limits lists them for users.
"""
from __future__ import annotations

# --- the pickle (`<prefix>/data.pkl` of a torch zip, or a bare pickle file) ---------------------

# Its size after decompression: checked against the zip's declared size before reading, and the
# read itself stops there, so a deflate bomb costs nothing.
MAX_PICKLE_BYTES = 64 << 20
# Opcodes executed. Unpickling runs ~1-4 million opcodes a second, and each opcode makes at most one
# new object or reference, so this bounds both the time and the objects the pickle can create.
MAX_PICKLE_OPCODES = 4_000_000
# Items copied by the calls a pickle may make (`set(list)`, `OrderedDict(items)`, `torch.Size(...)`,
# the arguments handed to a class) and by BUILD states: without it, one memoized list could be
# copied once per opcode.
MAX_PICKLE_COPIED_ITEMS = 4_000_000
# One str, bytes or bytearray (tensor names, version strings and class names are short).
MAX_STRING_BYTES = 16 << 20
# One integer (LONG1 / LONG4): 64 bytes is 2**511; real files hold epochs, sizes and seeds.
MAX_INT_BYTES = 64
# Dict keys and set members must be str, bytes, bool, None, float, an int of at most 64 bits, or a
# pickled object (hashed by identity). Tuples, frozensets or complex numbers as keys are refused:
# their hashes are not cached (a tuple of shared tuples hashes 2**depth nodes) or can be made to
# collide on purpose, which makes inserting n keys cost n**2.
MAX_KEY_INT = 1 << 64

# --- the zip archive ----------------------------------------------------------------------------

# Members of the archive (one per tensor storage, plus three): read from the end-of-archive record
# before the central directory is parsed (each member costs ~0.5 KB of memory once parsed).
MAX_ZIP_MEMBERS = 200_000
# The storages a pickle declares (elements x element size, summed) may exceed the file's own size by
# at most this much. Torch stores tensors uncompressed, so their bytes are part of the file; only a
# re-compressed archive (or members that overlap) can decode to more.
MAX_STORAGE_INFLATION_BYTES = 512 << 20
# Tensors that are not a storage's first plain use (strided copies, broadcast views, a storage used
# again) may add up to this many times the file's size, plus the slack: legitimate views overlap
# little, while a crafted pickle could copy or broadcast one storage a million times.
TENSOR_EXPANSION_FACTOR = 2
TENSOR_EXPANSION_SLACK_BYTES = 64 << 20
# Small text members (`<prefix>/byteorder`).
MAX_SMALL_MEMBER_BYTES = 64

# --- the pickled model ------------------------------------------------------------------------------

# nn.Module nesting, and module visits along all paths (a tree of shared modules could otherwise ask
# for 2**depth visits; YOLO-NAS L has ~600 modules).
MAX_MODULE_DEPTH = 200
MAX_MODULE_VISITS = 100_000
# Classes of the detection head: the shape of `heads.head*.cls_pred.weight` decides how large the
# model built from the file is; LVIS has 1,203 classes, ImageNet-21k 21,841.
MAX_NUM_CLASSES = 100_000
# Pickled attributes turned into plain metadata (nesting depth, items, elements of small arrays).
PLAIN_MAX_DEPTH = 8
PLAIN_MAX_ITEMS = 10_000
PLAIN_MAX_ARRAY = 64
