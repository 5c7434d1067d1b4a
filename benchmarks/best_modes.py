#!/usr/bin/env python
"""Each model's best mode from benchmarks/models.py output, and issue 14's model targets.

    python benchmarks/best_modes.py models.log [more.log ...]    # e.g. OUT/rednet-table.log OUT/compile.log

Reads the result rows (``| mode | layout | batch | precision | model | inference | training | peak GiB |``) of
one or more runs, and for every batch and precision prints each model's fastest (mode, layout) for inference
and for training, the ratios of those best modes against ResNet-50's best modes, and the training peak memory
ratio in every (mode, layout) measured for both models. The targets: the model in its best mode at least as
fast as ResNet-50 in its best mode, and its training peak memory at most 0.8x ResNet-50's.
"""
import collections
import re
import sys
from typing import Dict, List, Tuple

BASELINE = 'ResNet-50'
MEMORY_TARGET = 0.8
# | mode | layout | batch | precision | model | inference img/s | training img/s | training peak GiB |
ROW = re.compile(r'^\| ([a-z][\w-]*) \| (\w+) \| (\d+) \| (\w+) \| ([^|*]+?) \| ([\d.]+) \| ([\d.]+) \| '
                 r'([\d.]+|n/a) \|')


def read_rows(paths: List[str]) -> Dict[Tuple[int, str], Dict[str, Dict[Tuple[str, str], Tuple[float, ...]]]]:
    """{(batch, precision): {model: {(mode, layout): (inference, training, peak GiB)}}}; later runs win."""
    table = collections.defaultdict(lambda: collections.defaultdict(dict))
    for path in paths:
        with open(path) as f:
            for line in f:
                match = ROW.match(line.strip())
                if match:
                    mode, layout, batch, precision, model, inference, training, peak = match.groups()
                    peak = float('nan') if peak == 'n/a' else float(peak)
                    table[int(batch), precision][model.strip()][mode, layout] = (float(inference), float(training),
                                                                                 peak)
    return table


def summary(table) -> List[str]:
    lines = []
    for (batch, precision), models in sorted(table.items()):
        if BASELINE not in models:
            continue
        base = models[BASELINE]
        for model, runs in models.items():
            if model == BASELINE:
                continue
            for index, phase in ((0, 'inference'), (1, 'training')):
                ours = max(runs.items(), key=lambda item: item[1][index])
                theirs = max(base.items(), key=lambda item: item[1][index])
                ratio = ours[1][index] / theirs[1][index]
                lines.append(f'# batch {batch} {precision} {phase}: {model} best {" ".join(ours[0])} '
                             f'{ours[1][index]:.0f} img/s, {BASELINE} best {" ".join(theirs[0])} '
                             f'{theirs[1][index]:.0f} img/s: {ratio:.2f}x (target >= 1: '
                             f'{"met" if ratio >= 1 else "NOT met"})')
            for key in sorted(set(runs) & set(base)):
                ratio = runs[key][2] / base[key][2]
                lines.append(f'# batch {batch} {precision} training peak memory, {" ".join(key)}: {model} '
                             f'{runs[key][2]:.2f} GiB, {BASELINE} {base[key][2]:.2f} GiB: {ratio:.2f}x (target <= '
                             f'{MEMORY_TARGET}: {"met" if ratio <= MEMORY_TARGET else "NOT met"})')
    return lines


def main(argv=None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print(__doc__.split('\n\n')[1], file=sys.stderr)
        return 2
    lines = summary(read_rows(paths))
    print('\n'.join(lines) if lines else f'no rows of both a model and {BASELINE} in {", ".join(paths)}')
    return 0 if lines else 1


if __name__ == '__main__':
    sys.exit(main())
