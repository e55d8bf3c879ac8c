"""What the API, `dlm sample` and the config refuse, by one set of bounds (`dlm.sampling_rules`): each refusal is
one line naming the argument, its value and what was expected, raised before any compute and leaving earlier
results alone; config variants by name; `dlm <command> --help` with help and defaults for every option."""

import argparse
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import make_module
from dlm.api import Model
from dlm.cli import build_parser, main
from dlm.config import ConfigError, SELF_CORRECT_ALGOS, check_config, request_sampler, resolve_variant
from dlm.data.tokenizer import load_tokenizer
from dlm.sampling_rules import ARG_RULES, SETTING_RULES

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema.yaml"
OLD = "an earlier result\n"


@pytest.fixture(scope="module")
def tok(packed):
    return load_tokenizer(str(packed.parent / "tok"))


@pytest.fixture(scope="module")
def mdlm(tok):
    return Model(make_module("mdlm", vocab_size=len(tok) + 1, block_length=32).eval(), tok)


def cli(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    ({"num_samples": 0}, "num_samples = 0 is invalid: expected an integer >= 1"),
    ({"num_samples": 2, "batch_size": 0}, "batch_size = 0 is invalid: expected an integer >= 1"),
    ({"num_samples": 1, "nucleus_p": 0}, "nucleus_p = 0 is invalid: expected a number in (0, 1]"),
    ({"num_samples": 1, "nucleus_p": -1}, "nucleus_p = -1 is invalid: expected a number in (0, 1]"),
    ({"num_samples": 1, "nucleus_p": 1.5}, "nucleus_p = 1.5 is invalid: expected a number in (0, 1]"),
    ({"num_samples": 1, "self_correct": True, "sc_temperature": 0.0}, "sc_temperature = 0.0 is invalid"),
    ({"num_samples": 1, "condition": "middle"}, "condition = 'middle' is invalid: expected one of"),
])
def test_generate_refuses_out_of_bounds_arguments_in_one_line(mdlm, args, message):
    """generate(0) failed inside range(), nucleus_p 0 gave argmax text, -1 and 1.5 passed silently."""
    args = dict(args)
    with pytest.raises(ValueError) as e:
        mdlm.generate(args.pop("num_samples"), steps=2, **args)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_self_correction_of_a_model_without_a_denoiser_is_refused(tok, mdlm):
    """`self_correct` on an AR model raised an empty NotImplementedError."""
    ar = Model(make_module("ar", vocab_size=len(tok) + 1, block_length=32).eval(), tok)
    with pytest.raises(ValueError, match=r"^self_correct is invalid for a 'ar' model: .*denoiser.*'mdlm'"):
        ar.self_correct(["In the beginning"])
    with pytest.raises(ValueError, match=r"^self_correct = True is invalid for a 'ar' model"):
        ar.generate(1, self_correct=True)
    with pytest.raises(ValueError, match=r"^temperature = -1 is invalid: expected a number > 0$"):
        mdlm.self_correct(["In the beginning"], temperature=-1)
    # the catalogue's list is exactly the methods with a denoiser (x_theta from output_log_probs)
    from dlm.algos import get_method
    from dlm.algos.base import Method

    algos = ("ar", "mdlm", "sdtt", "udlm", "duo", "dcd", "gidd", "d3pm", "sedd")
    has = {a for a in algos if get_method(a).output_log_probs is not Method.output_log_probs}
    assert has == set(SELF_CORRECT_ALGOS)


def test_cli_refuses_before_reading_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    out.write_text(OLD)
    for flag, value, message in (("--num-samples", 0, "num_samples = 0 is invalid"),
                                 ("--nucleus-p", 0, "nucleus_p = 0.0 is invalid: expected a number in (0, 1]"),
                                 ("--nucleus-p", 1.5, "nucleus_p = 1.5 is invalid"),
                                 ("--batch-size", -2, "batch_size = -2 is invalid")):
        rc, err = cli(capsys, "sample", "--ckpt", tmp_path / "not-read.ckpt", "--sampler", "mdlm_ancestral",
                      flag, value, "--out", out)
        assert rc == 2 and err.startswith("dlm sample: error: ") and message in err and err.count("\n") == 1, err
        assert out.read_text() == OLD


def test_config_and_code_take_the_same_bounds():
    """The schema's bounds of sampling.num_samples / batch_size, the plan's steps and every variant setting agree
    with `dlm.sampling_rules` on values at and around each bound, and a variant built without the schema (a dict
    given to the API) is refused by the same rule with its key."""
    schema = yaml.safe_load(SCHEMA.read_text())
    sampling = schema["properties"]["sampling"]["properties"]
    variant = sampling["variants"]["additionalProperties"]["properties"]
    pairs = [(sampling["num_samples"], ARG_RULES["num_samples"]), (sampling["batch_size"], ARG_RULES["batch_size"]),
             (schema["definitions"]["steps_list"]["items"], ARG_RULES["steps"])]
    pairs += [(variant[k], SETTING_RULES[k]) for k in variant if k != "sampler"]
    assert set(variant) - {"sampler"} <= set(SETTING_RULES)
    probes = [-1, 0, 0.5, 1, 1.5, 2, 0.0, 1.0, True, "keep_crossing", "drop_crossing", "infill", "x", None]
    for sub, (accepts, _) in pairs:
        for v in probes:
            if "integer" in str(sub.get("type")) and isinstance(v, float) and v.is_integer():
                continue  # JSON Schema counts 1.0 as an integer; the config's YAML gives ints anyway
            if v is None and sub is sampling["batch_size"]:
                continue  # the API's batch_size=None (all samples at once) has no config spelling
            by_schema = jsonschema.Draft202012Validator(sub).is_valid(v)
            if v is None and by_schema is True and "null" not in str(sub.get("type")):
                by_schema = False
            assert by_schema == bool(accepts(v)), (sub, v)
    with pytest.raises(ConfigError, match=r"key 'sampling.variants.bad.nucleus_p': nucleus_p = 0 is invalid"):
        resolve_variant({"sampling": {"variants": {"bad": {"sampler": "mdlm_ancestral", "nucleus_p": 0}}}}, "bad")


def test_plan_self_correcting_a_model_without_a_denoiser_is_a_config_error(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    cfg["sampling"]["plan"].append({"run": "ar", "sampler": "gidd_sc_ar", "steps": [4]})
    cfg["sampling"]["variants"]["gidd_sc_ar"] = {"sampler": "ar", "self_correct": True}
    with pytest.raises(ConfigError, match=r"sampling.plan.\d+.sampler': value 'gidd_sc_ar' is invalid: it self-corrects"):
        check_config(cfg, str(SCHEMA))


def test_variants_of_the_config_are_accepted_by_name(mdlm, real_ckpt, tmp_path, capsys, monkeypatch):
    """`dlm sample --sampler gidd_sc` / generate(sampler="gidd_sc") were refused: a variant of the workflow config
    (config/config.yaml of the working directory by default, or --config / config=) resolves as the sample rule
    resolves it, the caller's settings on top."""
    monkeypatch.chdir(ROOT)
    sampler, settings, name = request_sampler("gidd_sc")
    assert (sampler, settings["self_correct"], name) == ("gidd_ancestral", True, "gidd_sc")
    sampler, settings, _ = request_sampler("mdlm_top_p09", {"nucleus_p": 0.5})
    assert sampler == "mdlm_ancestral" and settings["nucleus_p"] == 0.5
    with pytest.raises(ValueError, match=r"unknown sampler 'mdlm_top_p9'.*did you mean 'mdlm_top_p09'"):
        request_sampler("mdlm_top_p9")
    cfg = {"sampling": {"variants": {"mdlm_sc": {"sampler": "mdlm_ancestral", "self_correct": True, "sc_steps": 2}}}}
    out = mdlm.generate(2, sampler="mdlm_sc", steps=2, config=cfg)
    assert "tokens_before" in out.extra and "sc_steps_mean" in out.extra
    with pytest.raises(ValueError, match=r"condition = 'infill' needs a prompt"):
        mdlm.generate(1, sampler="mdlm_infill", steps=2)
    samples = tmp_path / "s.jsonl"
    rc, err = cli(capsys, "sample", "--ckpt", real_ckpt, "--sampler", "mdlm_top_p09", "--config",
                  ROOT / "config" / "config.yaml", "--steps", 2, "--num-samples", 2, "--batch-size", 2,
                  "--device", "cpu", "--out", samples)
    assert rc == 0, err
    row = json.loads(samples.read_text().splitlines()[0])
    assert (row["sampler"], row["sampler_kind"], row["settings"]["nucleus_p"]) == ("mdlm_top_p09", "mdlm_ancestral", 0.9)
    rc, err = cli(capsys, "sample", "--ckpt", real_ckpt, "--sampler", "gidd_sc", "--out", tmp_path / "g.jsonl")
    assert rc == 2 and "sampler 'gidd_ancestral' applies to ['gidd'], not to a 'mdlm' model" in err


def test_every_option_of_every_command_has_help_and_shows_its_default(capsys):
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"integral", "gen-ppl", "train", "sample", "val-ppl", "import", "unlock-stale"} <= set(commands)
    for name, sub in commands.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"dlm {name} {action.option_strings or action.dest}: no help"
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for action in sub._actions:
            if action.option_strings and action.default not in (None, argparse.SUPPRESS) and not action.required:
                shown = " ".join(f"{action.help} (default: {action.default})".split())
                assert shown in text, (name, action.option_strings, text[:400])
