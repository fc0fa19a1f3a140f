"""The run's resource tables: every job's record (Snakemake's benchmark TSV) summed per rule and per method."""
from sers.io import write_text
from sers.metrics import write_table_csv
from sers.usage import collect_records, usage_by_method, usage_by_rule, usage_markdown
from sers.workflow import script_context

with script_context(snakemake.log[0]) as log:
    p, out = snakemake.params, snakemake.output
    records = collect_records(p.records)
    by_rule = usage_by_rule(records, p.gpu_rules)
    by_method = usage_by_method(records, p.methods, p.gpu_rules, p.rule_methods)
    write_table_csv(by_rule, out.by_rule)
    write_table_csv(by_method, out.by_method)
    write_text(out.markdown, usage_markdown(by_rule, by_method))
    log.info("%d job records under %s: %.2f h wall in all", len(records), p.records, by_rule["wall_h"].sum())
