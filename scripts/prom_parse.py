"""Parse a Prometheus text exposition with the Prometheus Python client and print it as JSON.

The independent check of rsmld's metrics output (src/metrics tests): the exposition is read
from stdin by prometheus_client's own parser (text_string_to_metric_families), and every
family is printed as {"name", "type", "samples": [{"name", "labels", "value"}]}. A text the
parser rejects makes this exit non-zero with the parser's message on stderr.

    .state/metrics-venv/bin/python scripts/prom_parse.py < scrape.prom
"""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main() -> int:
    text = sys.stdin.read()
    try:
        families = [
            {
                "name": family.name,
                "type": family.type,
                "samples": [
                    {"name": s.name, "labels": s.labels, "value": s.value}
                    for s in family.samples
                ],
            }
            for family in text_string_to_metric_families(text)
        ]
    except ValueError as e:
        print(f"prom_parse: the exposition does not parse: {e}", file=sys.stderr)
        return 1
    json.dump(families, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
