"""Supernet scores (proxy=supernet|predictor, and so NetAdapt on the search's supernet) validate on the
whole validation split by default: 500 images leave ~2 points of sampling error on scores that differ by
less. ``proxy.val_subset=N`` still narrows it; the training proxy keeps its 500."""

from __future__ import annotations

import pytest
import torch

from evaluators.accuracy import accuracy_evaluator, proxy_data_config
from evaluators.supernet import SuperNet, save_supernet, score_subnet
from search.schema import compose_options

pytestmark = pytest.mark.usefixtures("one_thread")

WHOLE = 600  # validation images of DATA: more than the old default of 500
DATA = ["data.num_classes=4", "data.train_size=700", "data.test_size=16", f"data.val_size={WHOLE}"]


@pytest.fixture(scope="module")
def supernet_dir(tiny_space, tmp_path_factory):
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("supernet")
    save_supernet(run, SuperNet(tiny_space), record={"data": {}})
    return run


def test_search_scores_on_the_supernet_with_the_whole_validation_split(supernet_dir, tiny_space):
    cfg = compose_options("search", ["proxy=supernet", f"proxy.supernet={supernet_dir}",
                                     "proxy.calib_batches=1", *DATA])
    assert cfg.proxy.val_subset is None
    evaluator = accuracy_evaluator(cfg.proxy, cfg.data, cfg.trainer)
    assert len(evaluator.data.val) == WHOLE
    spec = tiny_space.seed
    score = score_subnet(evaluator.net, spec, evaluator.data, calib_batches=1)
    assert score.count == WHOLE and evaluator.evaluate(spec).accuracy == score.top1


@pytest.mark.parametrize(("overrides", "images"), [(["proxy=predictor"], None),  # its samples: as supernet
                                                   (["proxy=supernet", "proxy.val_subset=50"], 50),
                                                   (["proxy=train"], 500)])
def test_val_subset_narrows_supernet_scores_when_set_and_the_training_proxy_keeps_500(overrides, images):
    cfg = compose_options("search", [*overrides, f"data.val_subset={WHOLE}"])
    assert proxy_data_config(cfg.proxy, cfg.data).val_subset == (images or WHOLE)
