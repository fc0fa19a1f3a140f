"""AR, BWT, FWT and the stage × task matrix of one (order, method)."""
import pandas as pd

from sers.comparison import paired_bwt_se, run_scores
from sers.io import read_json, read_jsonl, write_json
from sers.metrics import check_complete, compute_metrics, score_matrix, single_model_metrics, write_table_csv
from sers.workflow import script_context

with script_context(snakemake.log[0]) as log:
    p, wc = snakemake.params, snakemake.wildcards
    summaries = []
    for path in p.summaries:  # in the input's eval/ folders
        s = read_json(path)
        # θ0 is shared by every method: label its rows as this run's stage 0
        summaries.append({**s, "order": wc.order, "method": wc.method, "path": path})
    if wc.method == "mtl":
        metrics = single_model_metrics(summaries, p.order)
        # the one model, in score_matrix's layout (a "stage" column), so readers of matrix.csv need no special case
        matrix = pd.DataFrame([metrics["scores"]], index=pd.Index(["mtl"], name="stage"),
                              columns=pd.Index(list(p.order), name="task"))
    else:
        check_complete(summaries, p.order, p.need_all, p.need_base)
        metrics = compute_metrics(summaries, p.order)
        matrix = score_matrix(summaries, p.order)
        # every stage scores the same eval rows: BWT's SE from the per-row differences a[n][i] − a[i][i]
        cells = [(s, read_jsonl(pred)) for s, pred in zip(summaries, p.predictions) if s["stage"] > 0]
        metrics["bwt_se_independent"] = metrics["bwt_se"]
        metrics["bwt_se"] = paired_bwt_se(run_scores(cells, p.order))
    write_table_csv(matrix, snakemake.output.matrix, index=True)
    write_json(snakemake.output.metrics, {"order": wc.order, "method": wc.method, "tasks": list(p.order), **metrics})
    log.info("%s/%s: AR %.2f, BWT %s", wc.order, wc.method, metrics["ar"], metrics["bwt"])
