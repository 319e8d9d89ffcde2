"""Public names and layering: the data layer never imports the model or the kernels. Budget: < 1 s."""

import ast
from pathlib import Path

import data

DATA_DIR = Path(data.__file__).resolve().parent


def test_public_names_resolve():
    for name in ("Structure", "open_dataset", "write_dataset", "read_structures", "neighbor_list", "VerletList",
                 "Batch", "collate", "DataError", "Dataset", "schema", "stats", "synthetic"):
        assert getattr(data, name) is not None, name
    assert set(data.__all__) <= set(dir(data))


def test_no_imports_of_potential_or_kernels():
    for path in sorted(DATA_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in ("potential", "kernels", "train", "md", "screen"), f"{path.name} imports {name}"


def test_schema_table_lists_every_field():
    doc = data.schema.__doc__
    for field in data.schema.FIELDS:
        assert f"| {field.key} " in doc, field.key
