"""The Node client's README example type-checks under TypeScript's ``strict`` against the
package's own sources, as a service that installed it would compile it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

NODE_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "node"
TSC = NODE_CLIENT / "node_modules" / ".bin" / "tsc"


def test_the_readme_example_type_checks_under_strict(tmp_path: Path) -> None:
    assert TSC.exists(), f"{TSC} is missing: run `make` (npm ci in clients/node)"
    readme = (NODE_CLIENT / "README.md").read_text(encoding="utf-8")
    [example] = re.findall(r"<!-- typechecked: [^>]*-->\n```ts\n(.*?)```", readme, re.S)
    (tmp_path / "service.ts").write_text(example)
    config = {
        "compilerOptions": {
            "strict": True,
            "noEmit": True,
            "target": "es2022",
            "module": "commonjs",
            "moduleResolution": "node",
            "esModuleInterop": True,
            "skipLibCheck": True,
            "typeRoots": [str(NODE_CLIENT / "node_modules" / "@types")],
            "types": ["node"],
            "baseUrl": ".",
            "paths": {"miasma-client": [str(NODE_CLIENT / "src" / "index.ts")]},
        },
        "files": ["service.ts"],
    }
    (tmp_path / "tsconfig.json").write_text(json.dumps(config))
    checked = subprocess.run(
        [str(TSC), "-p", str(tmp_path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    broken = example.replace("edited.app?.bindings", "edited.app.bindings")
    (tmp_path / "service.ts").write_text(broken)  # the check can fail: this is not strict-safe
    failed = subprocess.run(
        [str(TSC), "-p", str(tmp_path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert failed.returncode != 0
    assert "possibly 'undefined'" in failed.stdout
