"""Builds a pure-Python wheel (PEP 427) from a source tree, offline and with
nothing but the standard library, so that tests can `pip install` it into a
fresh venv on a machine without network access or the `wheel` package.

usage: build_wheel.py SRC_DIR OUT_DIR   (prints the wheel's path)
SRC_DIR holds pyproject.toml ([project] name and version) and one package.
"""
import base64
import hashlib
import pathlib
import sys
import tomllib
import zipfile

src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
project = tomllib.loads((src / "pyproject.toml").read_text())["project"]
name, version = project["name"], project["version"]
dist_info = f"{name}-{version}.dist-info"
wheel = out / f"{name}-{version}-py3-none-any.whl"

files = {}
for path in sorted((src / name).rglob("*.py")):
    files[path.relative_to(src).as_posix()] = path.read_bytes()
files[f"{dist_info}/METADATA"] = (
    f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    f"Summary: {project.get('description', '')}\n"
).encode()
files[f"{dist_info}/WHEEL"] = (
    b"Wheel-Version: 1.0\nGenerator: patchgap-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
)
files[f"{dist_info}/top_level.txt"] = f"{name}\n".encode()


def record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


record = [record_line(p, d) for p, d in files.items()] + [f"{dist_info}/RECORD,,"]
files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
    for path, data in files.items():
        z.writestr(path, data)
print(wheel)
