"""Filter one task's raw pseudo inputs; keep the reason for every dropped row."""
from sers.filtering import filter_rows
from sers.io import read_jsonl, write_json, write_jsonl
from sers.models import load_tokenizer
from sers.selection import embedder_path
from sers.workflow import script_context

with script_context(snakemake.log[0]) as log:
    p = snakemake.params
    tokenizer = load_tokenizer(p.model["path"], p.model["trust_remote_code"])
    embed_tok = load_tokenizer(embedder_path(p.embedder["source"], p.embedder["package"], p.embedder["path"]))
    kept, dropped, summary = filter_rows(
        read_jsonl(snakemake.input.raw), p.thresholds,
        count_tokens=lambda t: len(tokenizer(t, add_special_tokens=False).input_ids),
        count_embed_tokens=lambda t: len(embed_tok(t, add_special_tokens=False).input_ids),
    )
    write_jsonl(snakemake.output.filtered, kept)
    write_jsonl(snakemake.output.dropped, dropped)
    write_json(snakemake.output.summary, summary)
    log.info("kept %d of %d (dropped: %s)", len(kept), summary["raw"], summary["dropped_by_reason"])
