"""The cross-method table: AR, BWT, FWT per order and averaged over orders, and every method's paired
difference from the baselines (CSV, Markdown and the full comparisons as JSON)."""
from sers.comparison import compare_methods, run_scores, with_comparison_columns
from sers.io import read_json, read_jsonl, write_json, write_text
from sers.metrics import method_table, to_markdown_table, write_table_csv
from sers.workflow import script_context

with script_context(snakemake.log[0]) as log:
    p = snakemake.params
    by_order: dict = {}
    for path in snakemake.input.metrics:
        m = read_json(path)
        by_order.setdefault(m["order"], {})[m["method"]] = m
    runs: dict = {}
    for order, by_method in p.runs.items():
        for method, files in by_method.items():
            cells = [(read_json(f.removesuffix(".jsonl") + ".json"), read_jsonl(f)) for f in files]
            cells = [(s, rows) for s, rows in cells if s["stage"] > 0]  # θ0 is not a stage
            runs.setdefault(order, {})[method] = run_scores(cells, by_order[order][method]["tasks"])
    s = p.stats
    comparisons = compare_methods(runs, s["baselines"], s["bootstrap_resamples"], p.seed, s["confidence"],
                                  p.replicate_groups, s["resample_replicates"])
    write_json(snakemake.output.comparisons, [
        {"order": o, "method": m, "baseline": b, **result}
        for (o, m), by_baseline in comparisons.items() for b, result in by_baseline.items()])
    numeric = with_comparison_columns(method_table(by_order, True, p.replicate_groups), comparisons, s["baselines"],
                                      True)
    write_table_csv(numeric, snakemake.output.csv)
    table = to_markdown_table(with_comparison_columns(method_table(by_order, False, p.replicate_groups), comparisons,
                                                      s["baselines"]))
    level = round(100 * s["confidence"])
    write_text(snakemake.output.markdown,
               "ROUGE-L (×100) metrics per method; ± is one standard error (BWT's from the per-row differences "
               "a[n][i] − a[i][i]).\n"
               f"Δ columns: method − baseline on the same eval rows, with a {level}% paired bootstrap interval "
               f"({s['bootstrap_resamples']} resamples of the eval rows within each task) and a two-sided p-value; "
               "'within noise' where the interval contains 0. Rows '(mean of N replicates)' give the mean over "
               "training replicates ± their between-replicate SE, and Δ pooled over the replicates"
               + (" (replicates resampled too)" if s["resample_replicates"] else "") + ".\n\n"
               + table + "\n")
    log.info("\n%s", table)
