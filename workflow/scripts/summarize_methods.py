"""The cross-method table: AR, BWT, FWT per order and averaged over orders (CSV and Markdown)."""
from sers.io import read_json, write_text
from sers.metrics import method_table, to_markdown_table, write_table_csv
from sers.workflow import script_context

with script_context(snakemake.log[0]) as log:
    by_order: dict = {}
    for path in snakemake.input.metrics:
        m = read_json(path)
        by_order.setdefault(m["order"], {})[m["method"]] = m
    write_table_csv(method_table(by_order, numeric=True), snakemake.output.csv)
    table = to_markdown_table(method_table(by_order))
    write_text(snakemake.output.markdown, "ROUGE-L (×100) metrics per method; ± is one standard error.\n\n" + table + "\n")
    log.info("\n%s", table)
