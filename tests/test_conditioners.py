"""What the sampling conditioners answer for the evaluator, `explain`, `sample` and the server, so that none of
them branches on a conditioner's kind: class labels, prompts and no condition each give their own answer."""
import json

import torch

from noisecraft.conditioning import ClassLabels, Unconditional
from noisecraft.conditioning.text import TextPrompts
from noisecraft.config import ModelConfig


def never():
    raise AssertionError("a default that should not have been asked for")


def test_class_labels_answer_in_classes_and_are_evaluated_class_balanced():
    c = ClassLabels(3, ["cat", "dog"])
    assert c.evaluation_prompts(None, never) is None
    assert c.row_names(torch.tensor([0, 2])) == ["cat", "2"]  # a class without a name: its index
    assert c.edit_rows(lambda: 2, never).tolist() == [2, 0]  # its own class, then the next
    assert c.conditions_file(torch.tensor([1, 0])) == ("labels.json", "[1, 0]\n")
    assert c.image_settings(torch.tensor(1)) == {"class": 1, "class_name": "dog"}
    assert c.image_settings(3) == {"class": "none"}  # the null token
    assert ClassLabels(2).request_classes() == ["0", "1"] and c.request_classes() == ["cat", "dog"]


def test_text_prompts_answer_in_prompts_and_are_evaluated_on_the_prompts_given_or_the_protocols():
    t = TextPrompts(ModelConfig(context_dim=8))
    assert t.evaluation_prompts(["a red bird"], never) == {"source": "given", "prompts": ["a red bird"]}
    assert t.evaluation_prompts(None, lambda: {"source": "heldout", "prompts": ["x"]})["source"] == "heldout"
    assert t.row_names(["a", "b"]) == ["a", "b"]
    assert t.edit_rows(never, lambda n: ["p"] * n) == ["p", "p"]
    name, text = t.conditions_file(["a", "b"])
    assert name == "prompts.json" and json.loads(text) == ["a", "b"]
    assert t.image_settings("a red bird") == {"prompt": "a red bird"} and t.request_classes() == []


def test_no_condition_answers_nothing():
    c = Unconditional(["cat"])
    assert c.evaluation_prompts(None, never) is None and c.edit_rows(never, never) is None
    assert c.conditions_file(None) is None and c.image_settings(None) == {} and c.request_classes() == []
    assert c.noun == "" and c.row_names([None, None]) == ["", ""]
