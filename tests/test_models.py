"""Models as cuttable units: loading Hugging Face folders, splitting, and what crosses a cut."""

from __future__ import annotations

import json
import re
from itertools import combinations

import pytest
import sentence_transformers
import torch
import transformers

from quantpipe_core.models import (
    SentenceTokenizer,
    load_folder,
    load_model,
    model_dir,
    save_folder,
)
from quantpipe_core.models.carry import carry_wire_size, decode_carry, encode_carry
from quantpipe_core.quant import PacketError

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
IMAGE = dict(image_size=8, patch_size=2, num_channels=1, num_labels=10)
SENTENCES = [
    "Return the absolute value of a number.",
    "Create a new section in the configuration.",
    "The GzipFile class simulates most of the methods of a file object.",
    "Hi",
]


def hf_folder(tmp_path, model):
    """Save a randomly initialized transformers model the way the Hub stores it."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    model.eval().save_pretrained(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("config_class", "model_class"),
    [
        ("ViTConfig", "ViTForImageClassification"),
        ("DeiTConfig", "DeiTForImageClassification"),
        ("DeiTConfig", "DeiTForImageClassificationWithTeacher"),
    ],
)
def test_image_folder_gives_the_logits_transformers_gives(
    tmp_path, images, config_class, model_class
):
    config = getattr(transformers, config_class)(**TINY, **IMAGE)
    reference = getattr(transformers, model_class)(config)
    folder = hf_folder(tmp_path, reference)
    ours = load_folder(folder)
    with torch.no_grad():
        expected = reference(pixel_values=images).logits
        got = ours({"pixels": images})
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_bert_folder_gives_the_mean_pooled_states_transformers_gives(tmp_path):
    config = transformers.BertConfig(**TINY, vocab_size=100, max_position_embeddings=32)
    reference = transformers.BertModel(config, add_pooling_layer=False)
    folder = hf_folder(tmp_path, reference)
    ours = load_folder(folder)
    ids = torch.randint(1, 100, (2, 7), generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[1.0] * 7, [1.0] * 4 + [0.0] * 3])
    with torch.no_grad():
        states = reference(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        expected = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        got = ours({"input_ids": ids, "mask": mask})
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_minilm_gives_the_embeddings_sentence_transformers_gives():
    folder = model_dir("minilm")
    reference = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    ours = load_model("minilm")
    with torch.no_grad():
        got = ours(SentenceTokenizer(folder)(SENTENCES))
    expected = torch.tensor(reference.encode(SENTENCES))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def digits_vit():
    return load_model("digits-vit")


def test_every_split_of_the_model_gives_exactly_the_unsplit_output(digits_vit, images):
    with torch.no_grad():
        whole = digits_vit({"pixels": images})
        splits = [*combinations(digits_vit.cut_ids, 1), *combinations(digits_vit.cut_ids[::3], 3)]
        for cuts in splits:
            carry = {"pixels": images}
            for stage in digits_vit.split(list(cuts)):
                carry = stage(carry)
            assert torch.equal(carry["hidden"], whole), cuts


def test_units_are_named_by_the_cut_after_them(digits_vit):
    assert digits_vit.unit_names[:4] == ["embed", "block0.attn", "block0.gelu", "block0.out"]
    assert digits_vit.unit_names[-1] == "head"
    assert digits_vit.cut_ids == digits_vit.unit_names[:-1]
    stages = digits_vit.split(["block1.gelu", "block3.attn"])
    assert [s.unit_names[0] for s in stages] == ["embed", "block1.out", "block3.gelu"]
    held = [sum(p.numel() for p in s.parameters()) for s in stages]
    assert sum(held) == sum(p.numel() for p in digits_vit.parameters())  # each holds its own


def test_the_shipped_digits_vit_reaches_its_recorded_accuracy(digits_vit):
    from quantpipe_core.datasets import digits

    record = json.loads((model_dir("digits-vit") / "training.json").read_text())
    test = digits("test")
    with torch.no_grad():
        accuracy = (digits_vit({"pixels": test.images}).argmax(1) == test.labels).float().mean()
    assert accuracy.item() == pytest.approx(record["test_accuracy"], abs=1e-4)
    assert record["test_accuracy"] > 0.95


def test_transformers_reads_the_folders_we_write(tmp_path, digits_vit, images):
    config = json.loads((model_dir("digits-vit") / "config.json").read_text())
    save_folder(digits_vit, tmp_path, config)
    reference = transformers.ViTForImageClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            digits_vit({"pixels": images}), reference(pixel_values=images).logits,
            atol=1e-5, rtol=1e-5,
        )


def test_vit_base_has_vit_base_shapes():
    model = load_model("vit-base")
    assert len(model.blocks) == 12 and model.tokens == 197
    assert len(model.cut_ids) == 1 + 12 * 3
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(86.6e6, rel=0.01)


def test_a_tokenizer_with_a_length_cuts_and_pads_to_it_and_padding_changes_no_embedding():
    model, folder = load_model("minilm"), model_dir("minilm")
    natural, fixed = SentenceTokenizer(folder)(SENTENCES), SentenceTokenizer(folder, 32)(SENTENCES)
    assert natural["input_ids"].shape[1] < 32 and fixed["input_ids"].shape == (len(SENTENCES), 32)
    with torch.no_grad():
        assert torch.allclose(model(natural), model(fixed), atol=1e-5)  # the mask hides pads
    long = SentenceTokenizer(folder, 8)([" ".join(["word"] * 40)])
    assert long["input_ids"].shape == (1, 8) and long["mask"].sum() == 8  # cut, as the config


@pytest.mark.parametrize("model_name", ["digits-vit", "minilm"])
def test_carry_specs_and_wire_size_match_what_crosses_each_cut(model_name):
    model = load_model(model_name)
    if model.kind == "embedding":
        inputs = SentenceTokenizer(model_dir(model_name))(SENTENCES)
    else:
        inputs = {"pixels": torch.randn(4, 1, 8, 8)}
    tokens = inputs["input_ids"].shape[1] if "input_ids" in inputs else None
    with torch.no_grad():
        for cut in model.cut_ids:
            carry = model.run(inputs, 0, model.cut_index(cut) + 1)
            specs = model.carry_specs(cut, 4, tokens)
            assert {s.name: s.shape for s in specs} == {k: tuple(v.shape) for k, v in carry.items()}
            for bits in (2, 8, 32):
                frame = encode_carry(carry, bits, "ds-aciq")
                assert len(frame) == carry_wire_size(specs, bits), (cut, bits)
                received = decode_carry(frame)
                if "mask" in carry:
                    assert torch.equal(received["mask"], carry["mask"])


def test_damaged_carry_frames_raise_packet_errors(digits_vit):
    carry = digits_vit.run({"pixels": torch.randn(2, 1, 8, 8)}, 0, 3)
    frame = encode_carry(carry, 4)
    for damaged in (frame[:-1], frame[:9], b"XXXX" + frame[4:], frame + b"\0", frame[:4]):
        with pytest.raises(PacketError):
            decode_carry(damaged)


def test_bad_models_and_cuts_are_refused_clearly(tmp_path, digits_vit):
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        load_model("nope")
    with pytest.raises(ValueError, match=r"no config\.json"):
        load_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="'gpt2' is not supported"):
        load_folder(tmp_path)
    config = json.loads((model_dir("digits-vit") / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"no model\.safetensors"):
        load_folder(tmp_path)
    save_folder(digits_vit, tmp_path, {**config, "intermediate_size": 32})
    with pytest.raises(ValueError, match="has shape"):
        load_folder(tmp_path)
    with pytest.raises(ValueError, match=r"has no cut 'block9\.attn'"):
        digits_vit.cut_index("block9.attn")
    with pytest.raises(ValueError, match="model order"):
        digits_vit.split(["block2.out", "block1.out"])
    with pytest.raises(ValueError, match="sequence length"):
        load_model("minilm").carry_specs("block0.out", 4)


@pytest.mark.parametrize(("content", "message"), [
    (b'{"model_type": "vit", ', "not valid JSON: Expecting"),
    (b"\xff\xfe\x00binary", "not valid JSON: 'utf-8' codec can't decode"),
    (b'["vit"]', "expected a JSON object (a model config), got list"),
])
def test_a_broken_config_json_is_named(tmp_path, content, message):
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'config.json'}: {re.escape(message)}"):
        load_folder(tmp_path)


def test_the_partitioner_sizes_links_from_the_models_carry(digits_vit):
    import networkx as nx

    from quantpipe_core.models.carry import link_bytes
    from quantpipe_core.partition import partition

    n = len(digits_vit.unit_names)
    sizes = link_bytes(digits_vit, 8)
    gelu = digits_vit.cut_index("block1.gelu")
    assert sizes(gelu, 4) == carry_wire_size(digits_vit.carry_specs("block1.gelu", 8), 4)
    assert sizes(gelu, 4) > sizes(gelu + 1, 4)  # post-GeLU plus residual outweigh the block output
    graph = nx.Graph()
    graph.add_edge("a", "b", mbps=10.0)
    plan = partition({"a": [1e-3] * n, "b": [1e-3] * n}, sizes, graph, bits=2,
                     unit_names=digits_vit.unit_names)
    assert len(plan.devices) == 2 and plan.cut_ids[0] in digits_vit.cut_ids
    assert not plan.cut_ids[0].endswith(".gelu")  # the widest cut is never the cheapest link
