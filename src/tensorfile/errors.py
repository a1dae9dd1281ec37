"""Every error tensorfile raises on bad input.

One base class, :class:`TensorfileError`, and a subclass per kind of failure,
grouped by the layer that raises it. Messages say what was wrong, where (file,
tensor name, byte offset) and why. Callers that only care whether an input is
acceptable catch :class:`TensorfileError`; anything else escaping the library
on hostile input is a bug.

Several classes also derive from the builtin that code written against the
reference ``safetensors`` package would catch (``KeyError`` for a missing
tensor, ``ValueError`` for a malformed file), so swapping the import keeps
existing ``except`` clauses working.
"""

from __future__ import annotations


class TensorfileError(Exception):
    """Base class of every error tensorfile raises on purpose."""


class InputNotFoundError(TensorfileError, FileNotFoundError):
    """A file or folder given as input does not exist (a ``FileNotFoundError``
    too, as the reference raises). Build it as the builtin:
    ``InputNotFoundError(errno.ENOENT, "no such file or folder", path)``."""


class OutputExistsError(TensorfileError, FileExistsError):
    """An output file already exists and replacing it was not asked for:
    nothing was written (``OutputExistsError(errno.EEXIST, why, path)``)."""


# --------------------------------------------------------------------------
# Format: reading and writing safetensors files (spec/FORMAT.md)
# --------------------------------------------------------------------------


class FormatError(TensorfileError, ValueError):
    """The bytes are not a valid safetensors file."""

    #: Short machine-readable name of the rule that failed (see spec/FORMAT.md).
    kind: str = "format"


class TruncatedFileError(FormatError):
    """The file ends before the header or the data it declares."""

    kind = "truncated"


class HeaderTooLargeError(FormatError):
    """The declared header length is over the 100,000,000-byte limit."""

    kind = "header_too_large"


class InvalidHeaderError(FormatError):
    """The header is not UTF-8, not JSON, or not a JSON object of entries."""

    kind = "invalid_header"


class DuplicateKeyError(InvalidHeaderError):
    """The header JSON names the same key twice."""

    kind = "duplicate_key"


class InvalidMetadataError(FormatError):
    """``__metadata__`` is not a mapping of strings to strings."""

    kind = "invalid_metadata"


class InvalidDtypeError(FormatError):
    """A tensor entry names a dtype that does not exist."""

    kind = "invalid_dtype"


class InvalidShapeError(FormatError):
    """A shape is not a list of non-negative integers, or its size overflows."""

    kind = "invalid_shape"


class InvalidOffsetsError(FormatError):
    """``data_offsets`` are malformed, disagree with the shape, or do not tile the buffer."""

    kind = "invalid_offsets"


class FileReadError(TensorfileError, OSError):
    """The file could not be read after it was opened (an I/O error such as
    ``EIO``): the storage failed, not the format."""


class TensorNotFoundError(TensorfileError, KeyError):
    """No tensor of that name in the file."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class TensorNameTypeError(TensorNotFoundError, TypeError):
    """A tensor name that is not a ``str`` (``safetensors`` raises ``TypeError``)."""


class ClosedFileError(TensorfileError, ValueError):
    """The handle was used after it was closed."""


class FrameworkError(TensorfileError, ValueError):
    """An unknown framework or device was asked for, or the framework is not installed."""


class DeviceUnavailableError(FrameworkError, RuntimeError):
    """A device torch knows but cannot reach here (a CUDA device on a build or
    machine without one): a ``RuntimeError``, as ``safetensors`` raises."""


class SerializationError(TensorfileError, ValueError):
    """Tensors cannot be written as given (shared memory, unsupported dtype, bad names)."""


class NotATensorError(SerializationError, TypeError):
    """A value handed to a writer is not a tensor, an array or a ``TensorSpec``
    (``safetensors`` raises ``ValueError`` or ``TypeError`` here; this is both)."""


class MetadataTypeError(SerializationError, TypeError):
    """Metadata handed to a writer is not a dict of str to str (``safetensors``
    raises ``TypeError`` here; this is also one)."""


class SharedTensorsError(SerializationError, RuntimeError):
    """Tensors share memory, so writing each would lose (or duplicate) the
    sharing; or no name of a shared group covers the whole storage
    (``safetensors.torch`` raises ``RuntimeError`` here)."""


class MetaTensorError(SerializationError, RuntimeError):
    """A tensor on the ``meta`` device has no data to write (``RuntimeError`` in
    ``safetensors``, as torch's own copy out of a meta tensor)."""


class SliceIndexError(TensorfileError, IndexError):
    """An index into a tensor slice is out of range (an ``IndexError``, as numpy
    and torch raise, and a ``TensorfileError`` for code written for
    ``safetensors``' ``SafetensorError``)."""


#: The name ``safetensors`` gives its error: every error tensorfile raises on
#: purpose is one, so ``except SafetensorError`` keeps working after the import
#: is swapped.
SafetensorError = TensorfileError


class ShardIndexError(FormatError):
    """A ``*.safetensors.index.json`` file is malformed or names a missing shard."""

    kind = "invalid_index"


# --------------------------------------------------------------------------
# Pickles: scanning and converting (spec/SCANNING.md)
# --------------------------------------------------------------------------


class PickleError(TensorfileError):
    """A pickle or checkpoint container could not be read or is not acceptable."""


class ScanError(PickleError):
    """The input could not be scanned completely (so it is never called safe)."""


class MalformedPickleError(ScanError):
    """A pickle stream is broken where CPython's unpickler would also stop.

    ``offset`` is the byte offset (in the stream's buffer) of the opcode that failed.
    """

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at byte {offset})")
        self.offset = offset


class ScanLimitError(ScanError):
    """The input exceeds a resource bound of the scanner (nesting, size, count)."""


class UnsupportedContainerError(ScanError):
    """The file is an archive or encoding the scanner cannot read (7z, encrypted data, ...)."""


class MalformedModelError(ScanError):
    """A model file of another format (GGUF, ONNX, Keras, SavedModel) breaks its own structure."""


class ConversionError(PickleError):
    """A checkpoint could not be converted; nothing was written."""


class UnsafePickleError(ConversionError):
    """The checkpoint uses a global or call outside the tensor-rebuilding allowlist."""


class MalformedCheckpointError(ConversionError):
    """The checkpoint is inconsistent: a view past its storage, a short or missing
    storage record, a broken stream or archive (torch.load would fail too)."""


class UnsupportedCheckpointError(ConversionError):
    """A well-formed checkpoint holds something safetensors cannot store
    (quantized or sparse tensors, complex128, compressed records, not a checkpoint)."""


class NotAPickleError(UnsupportedCheckpointError):
    """The file to convert is already safetensors (whatever its name): nothing to convert."""


# --------------------------------------------------------------------------
# Integrity: manifests, signatures, verification (spec/SIGNING.md)
# --------------------------------------------------------------------------


class IntegrityError(TensorfileError):
    """Base of signing and verification failures. Verification fails closed."""


class KeyLoadError(IntegrityError):
    """A key or certificate could not be read, or is of an unsupported kind."""


class KeyPasswordError(KeyLoadError):
    """A private key is encrypted and no password was given, or the password is wrong."""


class TrustedRootError(KeyLoadError):
    """A Sigstore trusted root (``trusted_root.json`` or a client trust config)
    could not be read or is not one."""


class BundleError(IntegrityError):
    """The signature bundle is malformed, truncated, or of an unknown kind."""


class VerificationError(IntegrityError):
    """The signature or a digest does not match: the model must not be trusted."""


class ModelPathError(IntegrityError):
    """A model path cannot be hashed safely: a refused symlink, a special file,
    a path outside the model folder, a name that is not UTF-8, or a read error."""


class EmptyModelError(ModelPathError):
    """There is no model at the path: an empty file, an empty folder, or a
    folder without weights (what an interrupted download leaves). Never
    signed, verified or called safe."""


class PinsError(IntegrityError):
    """A pins file (trusted digests to verify a model against, without a key) is
    malformed, ambiguous or of an unknown format: nothing was verified."""


class UnsupportedAlgorithmError(BundleError):
    """The bundle names a hash, serialization method, key type or format tensorfile
    does not verify (so it is never reported as verified)."""


class SignatureError(VerificationError):
    """The DSSE signature does not verify with the trusted key, or the bundle names
    a different key."""


class CertificateError(SignatureError):
    """The certificate chain does not lead to a trusted root, is expired or not yet
    valid, or a certificate may not be used for what it signs."""


class ManifestError(VerificationError):
    """The signed payload is inconsistent: its resource digests do not add up to
    the subject's root digest, or its tensorfile extension names unknown files."""


class DigestMismatchError(VerificationError):
    """Bytes of a file, a safetensors header or a tensor differ from what was signed."""


class MissingFileError(VerificationError):
    """A file named in the signed manifest is not in the model."""


class NotSignedError(VerificationError):
    """Something is not covered by the signature: no signature file, a file or
    tensor that the manifest does not name."""


class UnexpectedFileError(NotSignedError):
    """The model has a file the signature does not cover (allowed only on request)."""


# --------------------------------------------------------------------------
# Scale: sharded models and tensor-parallel loading
# --------------------------------------------------------------------------


class PartitionError(TensorfileError, ValueError):
    """A partition plan cannot be applied: a split dimension a tensor does not
    have, a packed dtype split mid-byte, or no initialised process group."""


# --------------------------------------------------------------------------
# Pipelines: tensorfile check and its policy file
# --------------------------------------------------------------------------


class PolicyError(TensorfileError, ValueError):
    """A policy file (``tensorfile.toml``, ``[tool.tensorfile]``) is not valid: the
    message names the file, the line where it can, and the key or value at fault."""
# Remote: models read through fsspec (object storage, HTTP)
# --------------------------------------------------------------------------


class RemoteError(TensorfileError, OSError):
    """Reading a remote model failed: what the server answered could not be
    trusted to be the bytes asked for, so none of it was handed over."""


class RemoteSupportError(RemoteError):
    """A URL was given but fsspec (or the backend for its scheme) is not
    installed: ``pip install 'tensorfile[remote]'``."""


class RemoteRangeError(RemoteError):
    """The server did not answer a range request with exactly that range: it
    ignored ``Range`` (200 with the whole object), sent a ``Content-Range``
    other than the one asked for, or a body of another length."""


class RemoteChangedError(RemoteError):
    """The object changed between two requests (its ETag, version or size
    differs from the first answer's): its header no longer describes it."""


class RemoteRedirectError(RemoteError):
    """The server redirected to another host (or too many times); tensorfile
    follows redirects within one host only."""


class RemoteReadError(RemoteError):
    """A range could not be read after the retries: the connection dropped or
    the body ended early every time, or the server kept failing (5xx)."""
