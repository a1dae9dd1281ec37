"""Helpers for the scanner tests: a tiny pickle assembler, container builders, samples.

Hostile samples are written as bytes with the assembler below and are never
loaded. Every payload targets a canary path so a test can prove nothing ran.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
CORPUS = SHARED / "corpus" / "picklescan"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# ---------------------------------------------------------------------------
# Assembler (one function per opcode family)
# ---------------------------------------------------------------------------

STOP = b"."
MARK = b"("
REDUCE = b"R"
BUILD = b"b"
EMPTY_DICT = b"}"
EMPTY_TUPLE = b")"
NONE = b"N"


def proto(n: int = 2) -> bytes:
    return b"\x80" + bytes([n])


def glob(module: str, name: str) -> bytes:
    """GLOBAL (text form, any protocol)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(s: str) -> bytes:
    """BINUNICODE."""
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def short_text(s: str) -> bytes:
    """SHORT_BINUNICODE (protocol 4)."""
    raw = s.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def string0(s: str) -> bytes:
    """Protocol 0 STRING (a Python 2 str)."""
    return b"S" + repr(s).encode() + b"\n"


def binbytes(b: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(b)) + b


def integer(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def tup(*items: bytes) -> bytes:
    return MARK + b"".join(items) + b"t"


def call(func: bytes, *args: bytes) -> bytes:
    """func(*args) by REDUCE."""
    return func + tup(*args) + REDUCE


def stack_global(module: str, name: str) -> bytes:
    return short_text(module) + short_text(name) + b"\x93"


def frame(n: int) -> bytes:
    return b"\x95" + struct.pack("<Q", n)


def put(i: int) -> bytes:
    return b"q" + bytes([i])


def get(i: int) -> bytes:
    return b"h" + bytes([i])


def dict_of(*pairs: bytes) -> bytes:
    return EMPTY_DICT + MARK + b"".join(pairs) + b"u"


def command(canary: Path) -> str:
    return f"touch {canary}"


def os_system(canary: Path) -> bytes:
    """A complete protocol 2 pickle that would create ``canary``."""
    return proto(2) + call(glob("os", "system"), text(command(canary))) + STOP


def storage_pid(key: str = "0", location: str = "cpu", numel: int = 4) -> bytes:
    return tup(text("storage"), glob("torch", "FloatStorage"), text(key), text(location),
               integer(numel)) + b"Q"


def ordered_dict() -> bytes:
    return call(glob("collections", "OrderedDict"))


def tensor_v2(key: str = "0", location: str = "cpu") -> bytes:
    """_rebuild_tensor_v2 of a 4-element float storage, as torch.save writes it."""
    return call(glob("torch._utils", "_rebuild_tensor_v2"), storage_pid(key, location),
                integer(0), tup(integer(4)), tup(integer(1)), b"\x89", ordered_dict())


def state_dict(*names: str) -> bytes:
    """A benign protocol 2 state dict of float tensors, one storage each."""
    items = b"".join(text(n) + tensor_v2(str(i)) for i, n in enumerate(names))
    return proto(2) + ordered_dict() + MARK + items + b"u" + STOP


def records(prefix: str, count: int = 1, nbytes: int = 16) -> list[tuple[str, bytes]]:
    """The zip records ``<prefix>/data/<key>`` that :func:`state_dict` names
    (torch refuses an archive without them, and so does the scan)."""
    return [(f"{prefix}/data/{i}", bytes(nbytes)) for i in range(count)]


# ---------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------

def make_zip(entries: list[tuple[str, bytes]], *, flags: int = 0,
             local_names: dict[str, str] | None = None, bad_crc: bool = False,
             deflate: bool = False) -> bytes:
    """A zip built by zipfile, then patched the ways hostile archives are."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    raw = bytearray(buf.getvalue())
    for sig, flag_at, crc_at in ((b"PK\x03\x04", 6, 14), (b"PK\x01\x02", 8, 16)):
        at = raw.find(sig)
        while at >= 0:
            raw[flag_at + at] |= flags
            if bad_crc:
                raw[crc_at + at:crc_at + at + 4] = b"\xde\xad\xbe\xef"
            at = raw.find(sig, at + 4)
    for central, local in (local_names or {}).items():
        assert len(central) == len(local)
        at = raw.find(central.encode())  # the first occurrence is the local header's
        raw[at:at + len(local)] = local.encode()
    return bytes(raw)


def legacy(objects: bytes, keys: list[str] | None = None, records: list[bytes] | None = None,
           *, magic: bytes | None = None, sys_info: bytes | None = None) -> bytes:
    """The legacy torch layout: magic, protocol, sys_info, objects, keys, records."""
    magic = magic or (proto(2) + b"\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little") + STOP)
    keys = keys or []
    key_list = proto(2) + b"]" + (MARK + b"".join(text(k) for k in keys) + b"e" if keys
                                  else b"") + STOP
    out = (magic + proto(2) + b"M\xe9\x03" + STOP
           + (sys_info or proto(2) + dict_of(text("little_endian"), b"\x88") + STOP)
           + objects + key_list)
    for record in records or []:
        out += struct.pack("<q", len(record) // 4) + record
    return out


def make_tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def npy_object(pickle_bytes: bytes) -> bytes:
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + pickle_bytes


# ---------------------------------------------------------------------------
# Hostile samples: one per technique in shared/notes/torch-pickles.md
# ---------------------------------------------------------------------------

Sample = Callable[[Path], bytes]


def _callable(module: str, name: str, *args: bytes) -> Sample:
    return lambda c: proto(2) + call(glob(module, name), *(args or (text(command(c)),))) + STOP


def _exec_code(c: Path) -> str:
    return f"open({str(c)!r}, 'w').close()"


def _legacy_objects() -> bytes:
    return state_dict("w")


HOSTILE: dict[str, tuple[Sample, str]] = {
    # dangerous callables that denylists missed
    "pip.main": (_callable("pip", "main"), "dangerous"),
    "pydoc.pipepager": (_callable("pydoc", "pipepager", text("x"), text("sh")), "dangerous"),
    "venv.create": (_callable("venv", "create"), "dangerous"),
    "runpy._run_code": (lambda c: proto(2) + call(glob("runpy", "_run_code"),
                                                  text(_exec_code(c)), EMPTY_DICT) + STOP,
                        "dangerous"),
    "cProfile.run": (lambda c: proto(2) + call(glob("cProfile", "run"),
                                               text(_exec_code(c))) + STOP, "dangerous"),
    "timeit.timeit": (lambda c: proto(2) + call(glob("timeit", "timeit"),
                                                text(_exec_code(c))) + STOP, "dangerous"),
    "importlib.import_module": (_callable("importlib", "import_module"), "dangerous"),
    "pkgutil.resolve_name": (_callable("pkgutil", "resolve_name"), "dangerous"),
    "torch.hub.load": (_callable("torch.hub", "load"), "dangerous"),
    "cpp_extension.load_inline": (_callable("torch.utils.cpp_extension", "load_inline"),
                                  "dangerous"),
    "functools.partial(torch.load)": (
        lambda c: proto(2) + call(call(glob("functools", "partial"), glob("torch", "load"),
                                       text(str(c)))) + STOP, "dangerous"),
    "asyncio.unix_events submodule": (_callable("asyncio.unix_events", "_UnixSubprocessTransport"),
                                      "dangerous"),
    "webbrowser.open": (_callable("webbrowser", "open"), "dangerous"),
    "socket.create_connection": (_callable("socket", "create_connection"), "dangerous"),
    "urllib.request.urlopen": (_callable("urllib.request", "urlopen"), "dangerous"),
    "shutil.rmtree": (_callable("shutil", "rmtree"), "dangerous"),
    "io.FileIO": (_callable("io", "FileIO"), "dangerous"),
    "logging.FileHandler": (_callable("logging", "FileHandler"), "dangerous"),
    "types.CodeType": (_callable("types", "CodeType"), "dangerous"),
    "unlisted module": (_callable("some_helper_pkg.tools", "run"), "unknown"),
    "py2 __builtin__ eval": (lambda c: proto(2) + call(glob("__builtin__", "eval"),
                                                       text(_exec_code(c))) + STOP, "dangerous"),
    # names that reach further than they look
    "dotted pathlib+os.system": (lambda c: proto(4) + call(stack_global("pathlib", "os.system"),
                                                           short_text(command(c))) + STOP,
                                 "dangerous"),
    "dotted eval.__call__": (lambda c: proto(4) + call(stack_global("builtins", "eval.__call__"),
                                                       short_text(_exec_code(c))) + STOP,
                             "dangerous"),
    "allowed module dunder": (lambda c: proto(4) + stack_global(
        "torch._utils", "_rebuild_tensor_v2.__globals__") + STOP, "dangerous"),
    "__builtins__ of allowed module": (lambda c: proto(2) + glob("collections", "__builtins__")
                                       + STOP, "dangerous"),
    "getattr chain": (lambda c: proto(2) + call(call(
        glob("builtins", "getattr"), call(glob("builtins", "__import__"), text("os")),
        text("system")), text(command(c))) + STOP, "dangerous"),
    "sys.modules override": (lambda c: proto(2) + glob("sys", "modules") + text("torch._utils")
                             + glob("os", "path") + b"s" + STOP, "dangerous"),
    # STACK_GLOBAL operands that are not adjacent literals
    "STACK_GLOBAL memo of computed": (lambda c: proto(4) + call(glob("builtins", "str"),
                                                                text("os")) + put(0) + b"0"
                                      + get(0) + short_text("system") + b"\x93"
                                      + tup(short_text(command(c))) + REDUCE + STOP,
                                      "unknown"),  # the import cannot be determined
    "STACK_GLOBAL STRING operands": (lambda c: proto(4) + string0("nice") + string0("thing")
                                     + b"\x93" + STOP, "unknown"),
    "STACK_GLOBAL STRING operands os.system": (lambda c: proto(4) + string0("os")
                                               + string0("system") + b"\x93" + STOP,
                                               "dangerous"),
    "STACK_GLOBAL computed": (lambda c: proto(4) + call(glob("codecs", "decode"), text("bf"),
                                                        text("rot13")) + short_text("system")
                              + b"\x93" + STOP, "dangerous"),
    "STACK_GLOBAL memo literal": (lambda c: proto(4) + short_text("os") + put(1)
                                  + short_text("system") + put(2) + b"0" + b"0" + get(1)
                                  + get(2) + b"\x93" + tup(short_text(command(c))) + REDUCE
                                  + STOP, "dangerous"),
    # other opcodes that import or call
    "INST": (lambda c: MARK + text(command(c)) + b"ios\nsystem\n" + STOP,
             "dangerous"),
    "OBJ": (lambda c: MARK + glob("os", "system") + text(command(c)) + b"o" + STOP, "dangerous"),
    "NEWOBJ": (lambda c: proto(2) + glob("subprocess", "Popen") + tup(text(command(c)))
               + b"\x81" + STOP, "dangerous"),
    "NEWOBJ_EX": (lambda c: proto(4) + glob("subprocess", "Popen") + tup(text(command(c)))
                  + EMPTY_DICT + b"\x92" + STOP, "dangerous"),
    "NEWOBJ on allowed class": (lambda c: proto(2) + glob("collections", "OrderedDict")
                                + EMPTY_TUPLE + b"\x81" + STOP, "unknown"),
    # copyreg extension codes: no gadget can be named (stock Python registers none)
    "EXT1": (lambda c: proto(2) + b"\x82\x01" + tup(text(command(c))) + REDUCE + STOP,
             "unknown"),
    "EXT2": (lambda c: proto(2) + b"\x83\x01\x02" + STOP, "unknown"),
    "EXT4": (lambda c: proto(2) + b"\x84\x01\x02\x03\x04" + STOP, "unknown"),
    "BUILD on allowed global then call": (
        lambda c: proto(2) + glob("collections", "OrderedDict")
        + dict_of(text("__new__"), glob("os", "system")) + BUILD + tup(text(command(c)))
        + REDUCE + STOP, "dangerous"),
    "BUILD slot state on OrderedDict": (
        lambda c: proto(2) + ordered_dict() + tup(NONE, dict_of(text("__class__"),
                                                                glob("os", "system")))
        + BUILD + STOP, "dangerous"),
    "BUILD __setstate__ into OrderedDict": (
        lambda c: proto(2) + ordered_dict() + dict_of(text("__setstate__"),
                                                      glob("torch.storage", "_load_from_bytes"))
        + BUILD + dict_of(text("x"), integer(1)) + BUILD + STOP, "unknown"),
    "BUILD attributes on allowed function": (
        lambda c: proto(2) + glob("torch._utils", "_rebuild_tensor_v2")
        + dict_of(text("x"), integer(1)) + BUILD + STOP, "dangerous"),
    "persistent id not storage": (lambda c: proto(2) + text("anything") + b"Q" + STOP,
                                  "unknown"),
    "PERSID text": (lambda c: b"Pwhatever\n" + STOP, "unknown"),
    "persistent id module tuple": (lambda c: proto(2) + tup(text("module"), glob("os", "system"),
                                                            text("f.py"), text("src")) + b"Q"
                                   + STOP, "dangerous"),
    "tensor from non-storage": (lambda c: proto(2) + call(
        glob("torch._utils", "_rebuild_tensor_v2"), call(glob("os", "system"),
                                                         text(command(c))),
        integer(0), tup(), tup(), b"\x89", ordered_dict()) + STOP, "dangerous"),
    "_rebuild_tensor_v2 wrong shape": (lambda c: proto(2) + call(
        glob("torch._utils", "_rebuild_tensor_v2"), text("x")) + STOP, "unknown"),
    # payload in a pickle other than the first
    "after STOP": (lambda c: state_dict("a") + os_system(c), "dangerous"),
    "after benign first pickle with junk": (lambda c: proto(2) + NONE + STOP + os_system(c)
                                            + b"\xff\xff", "dangerous"),
    "legacy magic pickle": (lambda c: legacy(_legacy_objects(), magic=os_system(c)),
                            "dangerous"),
    "legacy sys_info pickle": (lambda c: legacy(_legacy_objects(), sys_info=os_system(c)),
                               "dangerous"),
    "legacy storage-key pickle": (
        lambda c: legacy(_legacy_objects())[:-len(proto(2) + b"]" + STOP)] + os_system(c),
        "dangerous"),
    "legacy object pickle": (lambda c: legacy(os_system(c)), "dangerous"),
    "legacy after records": (lambda c: legacy(_legacy_objects(), ["0"], [bytes(16)])
                             + os_system(c), "dangerous"),
    "legacy storage record holds pickle": (
        lambda c: legacy(_legacy_objects(), ["0"], [os_system(c).ljust(64, b"\0")]),
        "dangerous"),
    "second .pkl in zip": (lambda c: make_zip([("archive/data.pkl", state_dict("a")),
                                               ("archive/extra.pkl", os_system(c))]),
                           "dangerous"),
    "zip inside zip": (lambda c: make_zip([("outer/data.pkl", state_dict("a")),
                                           ("outer/inner.pt", make_zip([
                                               ("inner/data.pkl", os_system(c))]))]),
                       "dangerous"),
    "zip data record holds pickle": (lambda c: make_zip([("archive/data.pkl", state_dict("a")),
                                                         ("archive/data/0", os_system(c))]),
                                     "dangerous"),
    "nested _load_from_bytes": (lambda c: proto(2) + call(glob("torch.storage", "_load_from_bytes"),
                                                          binbytes(os_system(c))) + STOP,
                                "dangerous"),
    "nested _load_from_bytes latin1": (
        lambda c: proto(2) + call(glob("torch.storage", "_load_from_bytes"),
                                  call(glob("_codecs", "encode"),
                                       text(os_system(c).decode("latin-1")), text("latin1")))
        + STOP, "dangerous"),
    "nested _load_from_bytes in zip": (
        lambda c: make_zip([("a/data.pkl", proto(2) + call(
            glob("torch.storage", "_load_from_bytes"),
            binbytes(make_zip([("b/data.pkl", os_system(c))]))) + STOP)]), "dangerous"),
    "tar pickle member": (lambda c: make_tar({"sys_info": proto(2) + EMPTY_DICT + STOP,
                                              "pickle": os_system(c)}), "dangerous"),
    "tar storages member": (lambda c: make_tar({"storages": proto(2) + b"K\x01" + STOP
                                                + os_system(c), "pickle": proto(2) + NONE
                                                + STOP}), "dangerous"),
    "npy object array": (lambda c: npy_object(os_system(c)), "dangerous"),
    "npz object array": (lambda c: make_zip([("arr_0.npy", npy_object(os_system(c)))]),
                         "dangerous"),
    "npz compressed object array": (lambda c: make_zip([("arr_0.npy", npy_object(os_system(c)))],
                                                       deflate=True), "dangerous"),
    # a stream broken right after its payload
    "broken after payload": (lambda c: os_system(c)[:-1] + b"\xff", "dangerous"),
    "truncated after payload": (lambda c: os_system(c)[:-1] + MARK + b"X\xff\xff\xff\x7f",
                                "dangerous"),
    # zip tricks
    "zip flag 0x1": (lambda c: make_zip([("m/data.pkl", os_system(c))], flags=0x1), "dangerous"),
    "zip flag 0x20": (lambda c: make_zip([("m/data.pkl", os_system(c))], flags=0x20),
                      "dangerous"),
    "zip flag 0x40": (lambda c: make_zip([("m/data.pkl", os_system(c))], flags=0x40),
                      "dangerous"),
    "zip local/central names differ": (
        lambda c: make_zip([("m/datap.kl", os_system(c))], local_names={"m/datap.kl":
                                                                        "m/data.pkl"}),
        "dangerous"),
    "zip bad CRC": (lambda c: make_zip([("m/data.pkl", os_system(c))], bad_crc=True),
                    "dangerous"),
    "zip pickle under other name": (lambda c: make_zip([("m/config.json", os_system(c))]),
                                    "dangerous"),
    "zip deflated pickle": (lambda c: make_zip([("m/data.pkl", os_system(c))], deflate=True),
                            "dangerous"),
    "zip with prepended data": (lambda c: b"junk" * 10 + make_zip([("m/x.bin", os_system(c))]),
                                "dangerous"),
    "7z instead of zip": (lambda c: b"7z\xbc\xaf\x27\x1c\x00\x04" + os_system(c), "error"),
    "gzip": (lambda c: b"\x1f\x8b\x08\x00" + zlib.compress(os_system(c)), "error"),
    # FRAME and number forms where genops and the C unpickler disagree
    "opcode straddles FRAME": (lambda c: proto(4) + frame(3) + glob("os", "system")
                               + tup(short_text(command(c))) + REDUCE + STOP, "dangerous"),
    "FRAME inside FRAME": (lambda c: proto(4) + frame(40) + frame(20) + frame(60)
                           + glob("os", "system") + tup(short_text(command(c))) + REDUCE
                           + STOP, "dangerous"),
    "hex INT genops rejects": (lambda c: b"I0x10\n0" + os_system(c)[2:], "dangerous"),
    "hex LONG genops rejects": (lambda c: b"L0x10L\n0" + os_system(c)[2:], "dangerous"),
    "non-UTF-8 BINSTRING before payload": (lambda c: proto(2) + b"U\x02\xff\xfe0"
                                           + os_system(c)[2:], "dangerous"),
}


def benign_plain_pickles() -> dict[str, bytes]:
    """Plain data pickled by the standard library, every protocol (nothing to run)."""
    import pickle
    from collections import OrderedDict

    value = {"step": 3, "lr": 1e-3, "name": "run", "flags": [True, False, None],
             "blob": b"\x00\x01", "nested": OrderedDict(a=(1, 2.5)), "set": {1, 2}}
    return {f"plain_p{p}.pkl": pickle.dumps(value, protocol=p) for p in range(6)} | {
        "assembled_state_dict.pkl": state_dict("w", "b"),
        "assembled_legacy.pt": legacy(_legacy_objects(), ["0"], [bytes(16)]),
    }
