"""``mobilenas show``: an architecture as a layer table in the paper's layout, with its costs."""

from __future__ import annotations

from dataclasses import dataclass, field

from evaluators.cost import count_cost, layer_costs
from search.arch import arch_label, resolve_arch
from search_spaces import serialize
from search_spaces.errors import ConfigError
from search_spaces.limits import SpecLimits
from search_spaces.printout import LAYER_COLUMNS, format_columns, layer_rows
from search_spaces.reference import PAPER_FIGURES
from search_spaces.spec import ArchSpec

FORMATS = ("table", "markdown", "string", "json", "yaml")


@dataclass
class ShowConfig:
    """``mobilenas show``'s config (conf/show.yaml)."""

    limits: SpecLimits = field(default_factory=SpecLimits)
    arch: str = "mobilenet_v3_large"  # reference name, spec file (.json/.yaml/.txt) or spec string
    width_mult: float = 1.0  # width multiplier, for reference names only
    num_classes: int | None = None  # override the spec's classes
    resolution: int | None = None  # override the spec's input resolution (>= 32)
    format: str = "table"  # table | markdown | string | json | yaml
    # pretrained (issue 15): a torchvision / timm / mobilenas state_dict file checked against arch (its source
    # and tensor count are printed; timm's _075 widths replace the paper's multiplier)
    weights: str | None = None

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"show.format: {self.format!r} is not one of {', '.join(FORMATS)}")


CONFIG = ShowConfig


def describe(spec: ArchSpec, *, markdown: bool = False) -> str:
    """The layer printout with per-layer params and MAdds, then the totals."""
    rows = layer_rows(spec)
    per_layer = layer_costs(spec)  # stem, blocks..., head
    costed: list[tuple[str, ...]] = []
    for i, row in enumerate(rows):
        layer_index = min(i, len(per_layer) - 1)
        first_head_row = i == len(per_layer) - 1
        if i < len(per_layer) - 1 or first_head_row:
            params, madds = per_layer[layer_index]
            costed.append((*row, f"{params:,}", f"{madds / 1e6:.2f}M"))
        else:
            costed.append((*row, "", ""))
    printout = format_columns((*LAYER_COLUMNS, "params", "MAdds"), costed, markdown=markdown)
    cost = count_cost(spec)
    totals = (f"params {cost.params:,} ({cost.params_m:.2f} M)   MAdds {cost.madds_m:.1f} M "
              f"(conv+linear {cost.conv_linear_madds / 1e6:.1f} M; fvcore)")
    return f"{printout}\n\n{totals}"


def run(options: ShowConfig) -> None:
    spec = resolve_arch(options.arch, width_mult=options.width_mult,
                        num_classes=options.num_classes, resolution=options.resolution)
    loaded = None
    if options.weights:
        from search.weights import read_weights

        loaded = read_weights(options.weights, spec, reference=options.arch, width_mult=options.width_mult)
        spec = loaded.spec
    if options.format == "string":
        print(spec)
        return
    if options.format == "json":
        print(serialize.to_json(spec), end="")
        return
    if options.format == "yaml":
        print(serialize.to_yaml(spec), end="")
        return
    print(f"{arch_label(options.arch, width_mult=options.width_mult)}: "
          f"{spec.resolution}x{spec.resolution}x{spec.in_channels} input, "
          f"{spec.num_classes} classes\n")
    print(describe(spec, markdown=options.format == "markdown"))
    if options.arch in PAPER_FIGURES and options.width_mult == 1.0:
        paper = PAPER_FIGURES[options.arch]
        print(f"paper (224x224, 1000 classes): params {paper['params_m']} M   MAdds {paper['madds_m']:.0f} M")
    print(f"\nspec string:\n{spec}")
    if loaded is not None:
        print(loaded.summary())
