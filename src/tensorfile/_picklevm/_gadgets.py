"""Known gadgets and unsupported torch kinds: the tables that name what a finding is.

These only sharpen a verdict: a name outside the allowlist
(:mod:`tensorfile._picklevm.policy`) is ``unknown``; one found here is
``dangerous`` (a code-execution, file or network function or module) or
``unknown`` with what it is (a torch tensor kind the scanner does not
approve). Pure data, kept apart from the policy's logic; reasons in
spec/SCANNING.md.
"""

from __future__ import annotations

from typing import Final

#: Modules whose every attribute (and every submodule's) is treated as dangerous.
DANGEROUS_MODULES: Final[dict[str, str]] = {
    "os": "runs commands and touches files", "posix": "runs commands", "nt": "runs commands",
    "subprocess": "runs commands", "pty": "spawns shells", "commands": "runs commands",
    "popen2": "runs commands", "platform": "runs commands (popen)",
    "sys": "reaches every loaded module (sys.modules)", "runpy": "runs Python modules",
    "code": "runs Python source", "codeop": "compiles Python source",
    "importlib": "imports arbitrary modules", "pkgutil": "resolves arbitrary names",
    "imp": "imports arbitrary modules", "zipimport": "imports code from archives",
    "pip": "installs packages", "ensurepip": "installs packages", "venv": "creates envs, runs pip",
    "pydoc": "runs pagers (shell commands)", "_pyrepl": "runs pagers (shell commands)",
    "cProfile": "runs Python source", "profile": "runs Python source",
    "timeit": "runs Python source", "trace": "runs Python source", "pdb": "runs Python source",
    "bdb": "runs Python source", "doctest": "runs Python source", "ctypes": "calls native code",
    "_ctypes": "calls native code", "multiprocessing": "spawns processes",
    "asyncio": "spawns processes", "concurrent": "runs callables", "threading": "runs callables",
    "_thread": "runs callables", "signal": "installs handlers", "webbrowser": "runs browsers",
    "socket": "network access", "_socket": "network access", "ssl": "network access",
    "urllib": "network access", "urllib2": "network access", "http": "network access",
    "httplib": "network access", "requests": "network access", "ftplib": "network access",
    "smtplib": "network access", "imaplib": "network access and commands",
    "poplib": "network access", "telnetlib": "network access", "nntplib": "network access",
    "xmlrpc": "network access", "shutil": "copies, moves and deletes files",
    "tempfile": "creates files", "glob": "lists files",
    "fileinput": "reads files", "linecache": "reads files", "shelve": "unpickles files",
    "dbm": "touches files", "logging": "handlers open files and sockets",
    "pickle": "unpickles nested data", "_pickle": "unpickles nested data",
    "cloudpickle": "unpickles code", "dill": "unpickles code", "joblib": "unpickles nested data",
    "marshal": "loads code objects", "types": "builds code and function objects",
    "operator": "attrgetter/methodcaller reach any attribute",
    "_operator": "attrgetter/methodcaller reach any attribute",
    "idlelib": "runs Python source", "lib2to3": "loads pickles",
    "torch.utils.collect_env": "runs commands", "torch.utils.bottleneck": "runs Python source",
    "torch.fx": "evaluates expressions",
    "torch.utils._config_module": "ConfigModule.load_config unpickles its argument",
    "torch.utils.data.datapipes.utils.decoder": "basichandlers unpickles its data",
    "aiohttp": "network access",
    "functools": "partial/reduce call anything", "copyreg": "reconstructs arbitrary objects",
    "uuid": "runs commands (_popen)", "_osx_support": "runs commands",
    "_aix_support": "runs commands", "test": "test helpers run code",
    "distutils": "runs commands and compilers", "setuptools": "runs commands",
    "torch.hub": "downloads and runs code", "torch.utils.cpp_extension": "compiles and loads code",
    "torch.jit": "compiles and runs TorchScript", "torch.package": "imports packaged code",
    "torch.serialization": "loads files and nested checkpoints (torch.load, weights_only=False)",
    "torch._inductor": "compiles and runs code", "torch._dynamo": "compiles and runs code",
    "numpy.testing": "runstring runs Python source", "numpy.f2py": "compiles code",
    "numpy.distutils": "runs compilers", "numpy.lib.npyio": "loads pickles",
    "io": "FileIO/open touch files", "_io": "FileIO/open touch files",
    "codecs": "open touches files", "zipfile": "touches files", "tarfile": "touches files",
}

#: Single names that are gadgets although their module is not wholesale dangerous.
DANGEROUS_GLOBALS: Final[dict[str, str]] = {
    **{f"builtins.{n}": "runs code or reaches any attribute/module" for n in (
        "eval", "exec", "execfile", "compile", "__import__", "getattr", "setattr", "delattr",
        "globals", "locals", "vars", "open", "input", "breakpoint", "help", "apply",
        "reload", "file", "memoryview", "type", "object", "super", "classmethod",
        "staticmethod", "property", "exit", "quit", "copyright", "credits", "license",
    )},
    "torch.load": "nested torch.load", "torch._C": "native internals",
    "torch.storage._load_from_file": "nested load", "numpy.load": "loads pickles",
    "numpy.fromfile": "reads files", "numpy.memmap": "maps files",
    "_codecs.open": "opens files", "torch.save": "writes files",
    # pathlib's classes only hold a path (PosixPath is an ordinary value); these
    # methods, reached by a dotted name, touch the file system.
    **{f"pathlib.{cls}.{m}": "touches files" for cls in (
        "Path", "PosixPath", "WindowsPath") for m in (
        "write_text", "write_bytes", "read_text", "read_bytes", "open", "unlink", "rmdir",
        "rename", "replace", "touch", "mkdir", "chmod", "lchmod", "symlink_to",
        "hardlink_to", "link_to", "iterdir", "glob", "rglob")},
}

#: torch globals that rebuild tensors the scanner does not approve, or values
#: only such tensors use: ``unknown`` with what they are (they load no code;
#: the converter refuses them for the same reason).
UNSUPPORTED_GLOBALS: Final[dict[str, str]] = {
    "torch._utils._rebuild_sparse_tensor": "sparse COO/CSR/CSC/BSR tensor: unsupported layout",
    "torch._utils._rebuild_sparse_csr_tensor": "sparse CSR tensor: unsupported layout",
    "torch.serialization._get_layout": (
        "layout lookup by name (torch.sparse_coo, torch.sparse_csr...), written for sparse "
        "tensors: unsupported layout"),
    "torch._utils._rebuild_qtensor": "quantized tensor: unsupported",
    "torch._utils._rebuild_nested_tensor": "nested tensor: unsupported layout",
    "torch._utils._rebuild_meta_tensor_no_storage": "meta tensor (no data): unsupported",
    "torch._utils._rebuild_wrapper_subclass": "tensor subclass: unsupported",
    "torch._utils._rebuild_device_tensor_from_numpy": "device tensor from numpy: unsupported",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor": "device tensor: unsupported",
    "torch._utils._rebuild_xla_tensor": "XLA tensor: unsupported",
    "torch._utils._rebuild_mtia_tensor": "MTIA tensor: unsupported",
    "torch._utils._rebuild_parameter_with_state": "parameter with extra state: unsupported",
    "torch._tensor._rebuild_from_type_v2": (
        "tensor subclass (rebuilt through the class it names): unsupported"),
    "torch.nn.parameter.Parameter": "nn.Parameter built by NEWOBJ: unsupported",
    "torch.Tensor": "torch.Tensor class (tensor subclasses, legacy BUILD): unsupported",
    "collections.Counter": "a Counter: not on the allowlist",
    **{f"torch.{q}": "quantization scheme (quantized tensors): unsupported" for q in (
        "per_tensor_affine", "per_channel_affine", "per_tensor_symmetric",
        "per_channel_symmetric", "per_channel_affine_float_qparams")},
    **{f"torch.{layout}": "tensor layout (sparse tensors): unsupported layout" for layout in (
        "sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc", "strided",
        "_mkldnn", "jagged")},
}
