"""Unit tests of the many-leases benchmark's pure parts: the run order and the speed verdict.

Run by scripts/check.sh (`python3 -m unittest discover -s tests/bench`); stdlib only.
"""

import itertools
import json
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_leases as bl


class RunOrder(unittest.TestCase):
    def test_without_control_the_two_modes_alternate(self) -> None:
        self.assertEqual(bl.run_order(1, False), ("child", "serve"))
        self.assertEqual(bl.run_order(2, False), ("serve", "child"))
        self.assertEqual(bl.run_order(3, False), ("child", "serve"))

    def test_with_control_six_repetitions_run_every_order_once(self) -> None:
        orders = [bl.run_order(rep, True) for rep in range(1, 7)]
        self.assertEqual(sorted(orders), sorted(itertools.permutations(("child", "serve", "control"))))
        self.assertEqual(bl.run_order(7, True), orders[0])
        # Each mode runs first, second and third equally often.
        for pos in range(3):
            self.assertEqual(sorted(o[pos] for o in orders), ["child", "child", "control", "control", "serve", "serve"])


class SpeedVerdict(unittest.TestCase):
    control = (0.96, 1.04)

    def test_an_interval_above_one_is_faster_and_below_one_slower(self) -> None:
        self.assertEqual(bl.speed_verdict((1.02, 1.10), 1.05, self.control), ("serve faster", True))
        self.assertEqual(bl.speed_verdict((0.90, 0.99), 0.95, self.control), ("serve slower", False))
        # Below 1 is slower even when it is within the margin.
        self.assertFalse(bl.speed_verdict((0.97, 0.995), 0.98, self.control)[1])

    def test_a_median_of_at_least_one_meets_the_target(self) -> None:
        self.assertTrue(bl.speed_verdict((0.90, 1.08), 1.0, self.control)[1])

    def test_below_one_with_one_in_the_interval_needs_equality_within_the_margin(self) -> None:
        shows, met = bl.speed_verdict((0.956, 1.013), 0.998, self.control)
        self.assertTrue(met)
        self.assertIn("equal within 5%", shows)
        self.assertTrue(bl.speed_verdict((0.95, 1.05), 0.99, self.control)[1])
        shows, met = bl.speed_verdict((0.94, 1.02), 0.99, self.control)
        self.assertFalse(met)
        self.assertIn("not shown within 5%", shows)

    def test_a_run_whose_control_is_wider_than_the_margin_cannot_tell(self) -> None:
        shows, met = bl.speed_verdict((0.96, 1.02), 0.99, (0.93, 1.04))
        self.assertFalse(met)
        self.assertIn("not resolved", shows)
        self.assertFalse(bl.speed_verdict((0.96, 1.02), 0.99, None)[1])

    def test_too_few_pairs_decide_nothing(self) -> None:
        self.assertEqual(bl.speed_verdict(None, None, self.control), ("too few pairs", None))
        self.assertIsNone(bl.median_interval([1.0, 1.1]))


class PairedRatios(unittest.TestCase):
    def test_pairs_are_taken_within_a_repetition_and_failed_runs_left_out(self) -> None:
        def run(mode: str, rep: int, ips: float, ok: bool = True) -> dict:
            return {"handler": "discard", "leases": 4, "mode": mode, "rep": rep, "ok": ok, "items_per_s": ips}

        runs = [run("child", 1, 100.0), run("serve", 1, 110.0), run("control", 1, 95.0),
                run("child", 2, 200.0), run("serve", 2, 150.0, ok=False), run("control", 2, 210.0)]
        self.assertEqual(bl.paired_ratios(runs, "discard", 4), [1.1])
        self.assertEqual(bl.paired_ratios(runs, "discard", 4, "control"), [0.95, 1.05])
        self.assertEqual(bl.paired_ratios(runs, "exec", 4), [])


class Pooled(unittest.TestCase):
    def write(self, d: Path, name: str, runs: list[dict], batches: int = 200) -> str:
        path = d / name
        path.write_text(json.dumps({"meta": {"params": {"discard_batches": batches}}, "runs": runs}))
        return str(path)

    def test_repetitions_of_two_reports_are_never_paired_and_parameters_must_match(self) -> None:
        def run(mode: str, rep: int, ips: float) -> dict:
            return {"handler": "discard", "leases": 1, "mode": mode, "rep": rep, "ok": True, "items_per_s": ips}

        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            # Report a's repetition 1 has only a child run, b's only a serve run: no pair.
            a = self.write(d, "a.json", [run("child", 1, 100.0), run("child", 2, 100.0), run("serve", 2, 120.0)])
            b = self.write(d, "b.json", [run("serve", 1, 90.0), run("child", 2, 100.0), run("serve", 2, 80.0)])
            text = bl.pooled_report([a, b])
            self.assertIn("4 repetitions in all", text)
            self.assertIn("| discard | 1 | 1.000x |", text)  # the median of 1.2 and 0.8
            self.assertIn("1 of 2", text)
            c = self.write(d, "c.json", [], batches=800)
            with self.assertRaises(SystemExit):
                bl.pooled_report([a, c])


if __name__ == "__main__":
    unittest.main()
