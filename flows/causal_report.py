"""DVC stage causal_report: reports/causal/results.md, results.csv and mia.png from metrics/causal/."""
from __future__ import annotations

from prefect import flow

from flows import CAUSAL_METRICS, REPORTS, main
from lib.core.io import atomic_path, read_json, write_text
from lib.core.params import load_params
from lib.reports.causal import comparison_frame, comparison_markdown, example_markdown, mia_figure

METRICS, OUT = CAUSAL_METRICS, REPORTS / "causal"


def _summary(memorized: dict, finetune: dict) -> str:
    """What was unlearned and the thresholds that define 'forgotten'."""
    t = memorized["thresholds"]
    return (f"D_f: {memorized['n_forget']} of {memorized['n_candidates']} candidates (fine-tuning: "
            f"{finetune['steps']} steps, {finetune['seconds']} s). Eq. 17 thresholds from {memorized['n_valid']} "
            f"held-out emails: MA {100 * t['ma']:.1f} %, EL10 {100 * t['el']:.1f} %.\n")


def _mia_series(results: dict[str, dict]) -> dict[str, list[float]]:
    """Per-sample MIA distances of the references (from the first result) and of every method."""
    first = next(iter(results.values()))["models"]
    refs = {k: first[k]["mia_distances"] for k in ("original", "retrain") if k in first}
    return refs | {m: r["models"][m]["mia_distances"] for m, r in results.items()}


def config(params_file: str) -> list[str]:
    """The stage's params: `causal.pipeline`."""
    return load_params(params_file).get("causal.pipeline", list[str])


@flow(name="causal-report")
def report_flow(params_file: str = "params.yaml") -> str:
    """Table of every causal method beside the original and retrained models, plus the MIA figure."""
    methods = config(params_file)
    results = {m: read_json(METRICS / f"{m}.json") for m in methods}
    frame = comparison_frame(results)
    with atomic_path(OUT / "mia.png", suffix=".png") as tmp:
        tmp.write_bytes(mia_figure(_mia_series(results)))
    write_text(OUT / "results.csv", frame.write_csv())
    text = ("# Causal-LM unlearning: every method at equal forgetting\n\n"
            + _summary(read_json(METRICS / "memorized.json"), read_json(METRICS / "finetune.json"))
            + "\n" + comparison_markdown(frame) + "\n![MIA loss distances](mia.png)\n"
            + "\n## Greedy extraction from the text before the first forget sample's secret\n\n"
            + "Text is shown only with `causal.evaluate.log_private_text: true`.\n\n" + example_markdown(results))
    write_text(OUT / "results.md", text)
    return text


if __name__ == "__main__":
    main(report_flow, check=config)
