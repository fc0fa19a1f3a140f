"""Filter one task's raw pseudo rows (SERS's rules for masked inputs, SSR's for ICL pairs); keep the
reason for every dropped row."""
from sers.filtering import FILTERS
from sers.io import read_jsonl, write_json, write_jsonl
from sers.models import load_tokenizer
from sers.selection import embedder_path
from sers.workflow import script_context

with script_context(snakemake.log[0]) as log:
    p = snakemake.params
    tokenizer = load_tokenizer(p.model["path"], p.model["trust_remote_code"])
    embed_tok = load_tokenizer(embedder_path(p.embedder["source"], p.embedder["package"], p.embedder["path"]))
    # counts include the special tokens each tokenizer adds (BOS; CLS/SEP), as the reference's encode()
    kept, dropped, summary = FILTERS[snakemake.wildcards.kind](
        read_jsonl(snakemake.input.raw), p.thresholds,
        count_tokens=lambda t: len(tokenizer(t).input_ids),
        count_embed_tokens=lambda t: len(embed_tok(t).input_ids),
    )
    write_jsonl(snakemake.output.filtered, kept)
    write_jsonl(snakemake.output.dropped, dropped)
    write_json(snakemake.output.summary, summary)
    log.info("kept %d of %d (dropped: %s)", len(kept), summary["raw"], summary["dropped_by_reason"])
