"""The Snakemake workflow catalog's view of the project: its entry point workflow/Snakefile (which includes
the top-level Snakefile) plans what `snakemake` plans, lints and formats clean, and the catalog's usage
file and config/README.md say what its scraper reads. Dry-runs only (config/tiny.yaml)."""
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO


def _sorted_jobs(jobs):
    return sorted((rule, sorted(wildcards.items())) for rule, wildcards in jobs)


def test_both_entry_points_plan_the_same_jobs(workflow_dir):
    top = workflow_dir.planned_jobs("--configfile", "config/tiny.yaml")
    catalog = workflow_dir.planned_jobs("--snakefile", "workflow/Snakefile", "--configfile", "config/tiny.yaml")
    assert any(rule == "train_stage" for rule, _ in top)
    assert ("all", {}) in catalog  # the default target survives the include
    assert _sorted_jobs(catalog) == _sorted_jobs(top)


def test_the_catalog_entry_point_lints_and_formats_as_the_top_level_one(workflow_dir):
    proc = workflow_dir.snakemake("--lint", "--snakefile", "workflow/Snakefile", check=False)
    titles = {line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip().startswith("* ")}
    assert titles == {"* Specify a conda environment or container for each rule.:"}, titles  # answered: docs
    snakefmt = Path(sys.executable).parent / "snakefmt"
    fmt = subprocess.run([str(snakefmt), "--check", "workflow/Snakefile"], cwd=REPO, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_catalog_settings_have_the_keys_its_scraper_reads():
    """scripts/generate-catalog.py reads settings["usage"] -> mandatory-flags, report, software-stack-deployment."""
    settings = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text(encoding="utf-8"))
    usage = settings["usage"]
    flags = usage["mandatory-flags"]
    assert isinstance(flags["desc"], str) and flags["desc"].strip()
    assert "--cores" in flags["flags"]
    assert isinstance(usage["report"], bool)
    deployment = usage["software-stack-deployment"]
    assert set(deployment) == {"conda", "apptainer", "apptainer+conda"}
    assert all(isinstance(v, bool) for v in deployment.values())


def test_config_readme_names_every_config_file():
    readme = (REPO / "config" / "README.md").read_text(encoding="utf-8")
    files = [*(REPO / "config").rglob("*.yaml"), REPO / "benchmarks" / "forgetting.yaml",
             *(REPO / "benchmarks" / "forgetting-settings").glob("*.yaml"), REPO / "profiles" / "slurm" / "config.yaml"]
    missing = [str(f.relative_to(REPO)) for f in files if str(f.relative_to(REPO)) not in readme]
    assert not missing, missing
