"""The stages chained: fetch -> ingest -> split -> plan -> train -> calibrate (what ``make train`` runs)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from pipeline import distributed, synth
from pipeline.config import (
    Config,
    ConfigError,
    PreprocessConfig,
    flat_keys,
    load_config,
    user_settings,
)
from pipeline.data import TrainingData, load_training_data, seconds_to_preprocess, split_frame
from pipeline.fingerprint import fingerprint
from pipeline.manifest import (
    ALL_BUT,
    LISTING,
    class_key,
    findings_of,
    listing,
    load_manifest,
    manifest_classes,
    manifest_path,
    name_words,
    positive_parts,
    screened_members,
    split_path,
)
from pipeline.stages.calibrate import calibrate
from pipeline.stages.fetch import fetch, materialise_mnist
from pipeline.stages.ingest import folder_changes, ingest
from pipeline.stages.plan import make_plan
from pipeline.stages.split import make_split
from pipeline.stages.train import train_stage
from pipeline.trainer import CALIBRATION_SECONDS

log = logging.getLogger("pipeline")

# A whole-run budget leaving less than this to train is refused rather than spent on a model that cannot learn.
MIN_TRAINING_SECONDS = 10.0


def prepare_split(config: Config, progress: bool = True, manifest: Path | None = None):
    """Fetch, ingest and split as needed; return (manifest rows with a ``subset`` column, classes).

    A manifest or split file that already exists is used as it is, so a user may edit
    or supply their own; delete it to have it made again. ``manifest``: the path
    :func:`prepare_manifest` returned for this config, where it has run already.
    """
    manifest = manifest or prepare_manifest(config, progress)
    split_file = split_path(config)
    if not split_file.exists():
        s, data = config.split, config.data
        found = manifest_classes(manifest) if data.positive_class or data.healthy_class else []
        make_split(
            manifest, out=split_file,
            labels_per_class=None if s.labelled_fraction > 0 else s.labels_per_class,
            labelled_fraction=s.labelled_fraction or None,
            calibration_per_class=0 if s.calibration_fraction > 0 else s.calibration_per_class,
            calibration_fraction=s.calibration_fraction or None,
            test_fraction=s.test_fraction, selection=s.selection, seed=s.seed,
            screened_as_one=screened_as_one(config, found),
            screened_apart=screened_apart(config, found),
        )
    elif unsplit := scans_in_no_subset(manifest, split_file):
        log.warning("%d usable scans of %s are in no subset of %s (e.g. %s): the split was drawn before they were "
                    "ingested, and leaves them out; delete it to draw again", len(unsplit), manifest, split_file,
                    ", ".join(unsplit[:3]))
    frame, classes = split_frame(config)
    check_positive_class(config.data.positive_class, classes, config.data.healthy_class)
    return frame, classes


def scans_in_no_subset(manifest: Path, split_file: Path) -> list[str]:
    """The ids of the manifest's usable scans that the split file leaves out, but for the unlabelled scans
    of a patient in a labelled subset, which the split left out on purpose (its record beside it lists them)."""
    rows = load_manifest(manifest)
    ids = pd.read_csv(split_file, usecols=["scan_id"], dtype=str, keep_default_na=False)["scan_id"].str.strip()
    record = split_file.with_suffix(".json")
    try:  # a record a user edited or damaged only costs the check its exceptions
        meant = set(json.loads(record.read_text()).get("unlabelled_left_out_scans", []))
    except (OSError, ValueError, AttributeError, TypeError):
        meant = set()
    return sorted(set(rows.loc[rows["status"] == "ok", "scan_id"]) - set(ids) - meant)


def prepare_manifest(config: Config, progress: bool = True) -> Path:
    """Fetch and ingest as needed; return the manifest's path."""
    data = config.data
    if data.dataset == "synth_volumes":
        if not (Path(data.scans) / "labels.csv").exists():
            log.info("generating the synthetic volume set into %s", data.scans)
            synth.generate_volumes(data.scans, progress=progress, **synth.SYNTH_VOLUMES_DATASET)
        elif warning := synth.stale_set_warning(data.scans):
            log.warning("%s", warning)
    elif data.dataset:
        root = Path(data.scans).parent
        fetch(data.dataset, root=root)
        if data.dataset == "mnist":
            materialise_mnist(root, out=data.scans)
    manifest = manifest_path(config)
    if not manifest.exists():
        ingest(data.scans, labels=data.labels or None, out=manifest, classes=data.classes or None,
               class_subfolders=data.class_subfolders, workers=config.train.workers, columns=data.columns,
               include=data.include)
    elif changed := folder_changes(data.scans, manifest, data.include):
        log.warning("%s", changed)
    return manifest


def screened_as_one(config: Config, found: list[str]) -> list[str]:
    """The classes of ``found`` (a manifest's) a run screens as one abnormal class: every class but
    ``data.healthy_class``, or those ``data.positive_class`` joins; none for one positive class."""
    data = config.data
    if data.healthy_class:
        return [name for name in found if name != data.healthy_class]
    return screened_members(data.positive_class, found) if data.positive_class else []


def screened_apart(config: Config, found: list[str]) -> list[str]:
    """The classes of ``found`` (a manifest's) a run with a positive class counts as not abnormal, each
    a class of its own: every class but the positive one (or those it joins); none without a positive class."""
    positive = config.data.positive_class
    if not positive:
        return []
    members = screened_members(positive, found)
    return [name for name in found if name != positive and name not in members]


def check_positive_class(positive: str, classes: list[str], healthy: str = "") -> None:
    """Refuse a positive (or healthy) class the data does not have before training, not after it
    (calibrate needs it).

    Raises
    ------
    ValueError
        Naming the classes found, and the one meant where it differs only in case or spacing.
    """
    named = ", ".join(map(repr, classes))
    if healthy and healthy not in classes:
        raise ValueError(f"data.healthy_class {healthy!r} is not one of the classes {named}{_meant(healthy, classes)}; "
                         "set --healthy (HEALTHY=) to one of them")
    if not positive or positive in classes or listed_with(positive, classes) or screened_members(positive, classes):
        return  # listed: a finding that labels list ("Atelectasis|Effusion"), if not a class of its own
    parts = positive_parts(positive)
    for part in parts:
        if part not in classes:
            subject = f"joins {part!r}, which is" if len(parts) > 1 else "is"
            raise ValueError(f"data.positive_class {positive!r} {subject} not one of the classes {named}"
                             f"{_meant(part, classes)}; set --positive (POSITIVE=) to one of them, or to several "
                             "joined by '+' or ','")
    raise ValueError(f"data.positive_class {positive!r} is not one of the classes {named}")


def _meant(name: str, classes: list[str]) -> str:
    meant = [other for other in classes if class_key(other) == class_key(name) or _same_number(other, name)]
    return f" (did you mean {meant[0]!r}?)" if len(meant) == 1 else ""


def _same_number(a: str, b: str) -> bool:
    """"1" and "1.0" (a labels file saved by pandas from a column with a blank writes its 1s as 1.0)."""
    try:
        return float(a) == float(b)
    except ValueError:
        return False


# The longest name of classes joined by "+" that a report shows as the abnormal class (longer: "not <healthy>").
MAX_JOINED_NAME = 48


HEALTHY_NAMES = ("normal", "healthy", "no finding", "no tumor", "no tumour", "notumor", "notumour", "negative",
                 "control", "no")


HEALTHY_WORDS = ("normal", "healthy", "negative")


def healthy_looking(classes: list[str]) -> str | None:
    """The one class whose name says healthy ("Normal", "No Finding", "notumor"), if exactly one does;
    else the one whose words do ("Normal cases", "healthy_controls"; not where several do, as
    Kvasir's "normal-cecum" and "normal-pylorus")."""
    if len(classes) < 2:
        return None
    codes = {_binary_code(name): name for name in classes}
    if len(classes) == 2 and set(codes) == {0, 1}:
        return codes[0]  # a target coded 0/1 (RSNA's Target, ISIC's target, IDC's folders 0/ and 1/): 0 is none
    found = [name for name in classes if class_key(name) in HEALTHY_NAMES]
    if not found:
        found = [name for name in classes if name_words(name) & set(HEALTHY_WORDS)]
    return found[0] if len(found) == 1 else None


def listed_with(finding: str, classes: list[str]) -> list[str]:
    """``finding`` (where it is a class) and the classes whose labels list it among several findings
    ("Atelectasis|Effusion" for "Effusion"); [] where no label lists it with others."""
    lists = [name for name in classes if name != finding and finding in findings_of(name)]
    return ([finding] if finding in classes else []) + lists if lists else []


ANY_FINDING_NAMES = ("any", "any finding", "anything")


def any_finding_screening(config: Config, classes: list[str]) -> str | None:
    """The healthy class to screen against where the positive class asks for any finding (RSNA's
    haemorrhage labels' ``any``, left out by ingest as no finding of its own) and is no class of the
    data, and one class looks healthy (``no finding``); else None."""
    positive = config.data.positive_class
    if class_key(positive) not in ANY_FINDING_NAMES or positive in classes:
        return None
    return healthy_looking(classes)


def findings_screening(config: Config, classes: list[str]) -> tuple[str, str] | None:
    """(positive class, why) where the positive classes are also findings of labels that list
    several (NIH's "Atelectasis|Effusion", rows per finding joined by ingest): the scans with one of
    them among their findings are screened as one abnormal class, ``"with Effusion"`` (``"with Edema
    or Pneumonia"`` for ``Edema+Pneumonia``); else None (joined as classes, where no label lists one
    of them with others)."""
    positive = config.data.positive_class
    parts = positive_parts(positive)
    members = list(dict.fromkeys(name for part in parts for name in listed_with(part, classes)))
    if not members or any(part.startswith((LISTING, ALL_BUT)) for part in parts):
        return None
    named = " or ".join(map(repr, parts))
    return (listing(parts), f"every scan whose findings include {named}: {len(members)} labels list "
            f"{'it' if len(parts) == 1 else 'them'} ({', '.join(map(repr, members[:3]))}"
            f"{', ...' if len(members) > 3 else ''})")


def _binary_code(name: str) -> int | None:
    """0 or 1 where a class name codes one ("0", "1.0", "False", "true"); else None."""
    word = name.strip().lower()
    if word in ("false", "true"):
        return int(word == "true")
    try:
        value = float(word)
    except ValueError:
        return None
    return int(value) if value in (0.0, 1.0) else None


def healthy_screening(config: Config, classes: list[str]) -> tuple[str, str] | None:
    """(positive class, why) where the user named the healthy class instead: every other class,
    screened as one abnormal class named by their names joined by "+" (the one other class's name;
    ``"not <healthy>"`` where the join would be over ``MAX_JOINED_NAME`` characters); else None."""
    healthy = config.data.healthy_class
    if not healthy or config.data.positive_class:
        return None
    check_positive_class("", classes, healthy)
    # A class already joined ("glioma+meningioma", from a reviewer's verdict) adds its parts once.
    others = list(dict.fromkeys(part for name in classes if name != healthy for part in positive_parts(name)))
    if not others:
        raise ValueError(f"data.healthy_class {healthy!r} is the only class; a screening task needs another")
    why = f"every class but the healthy one, {healthy!r}"
    # CheXpert sets No Finding beside Support Devices (a line, no pathology); VinDr-CXR's readers disagree.
    beside = [name for name in classes if name != healthy
              and any(class_key(part) == class_key(healthy) for part in findings_of(name))]
    if beside:
        log.warning("%s %r with other findings (%s): screened abnormal, as every class but %r is; where those "
                    "findings are no disease, label those scans with the healthy class alone in the labels file, "
                    "or screen for one finding (--positive)",
                    "1 class lists" if len(beside) == 1 else f"{len(beside)} classes list", healthy,
                    ", ".join(beside[:3]) + (" ..." if len(beside) > 3 else ""), healthy)
    if len(joined := "+".join(others)) <= MAX_JOINED_NAME:
        return joined, why
    return ALL_BUT + healthy, (f"{why}: {len(others)} classes, named so in reports as their names joined would "
                               f"take {len(joined):,} characters")


def left_for_training(run_minutes: float, started: float) -> float:
    """Minutes of a whole command's budget left for training, which ends early enough to leave
    calibration its time (``Trainer.fit`` with a deadline).

    Raises
    ------
    ValueError
        The budget is spent (or nearly) before training could start.
    """
    spent = time.monotonic() - started
    left = run_minutes * 60 - spent
    if left - CALIBRATION_SECONDS < MIN_TRAINING_SECONDS:
        raise ValueError(f"the run's budget of {run_minutes:g} minutes leaves {max(left - CALIBRATION_SECONDS, 0):.1f} "
                         f"s for training, under the {MIN_TRAINING_SECONDS:.0f} s a model needs: {spent:.0f} s went to "
                         "ingest, split and the plan (the manifest and split are kept, so a second run spends "
                         "less); give more minutes (--minutes)")
    return left / 60


PREPROCESS_TIMING_SAMPLE = 8  # scans preprocessed to foresee the rest (at most 2 s of the budget)


def preprocessing_timer(frame, config: Config, user: dict):
    """``settings -> seconds`` foreseen to preprocess the usable scans of ``frame`` (a split frame)
    with the preprocessing ``settings`` (``PreprocessConfig`` fields) planned, the user's own
    ``preprocess.*`` values winning, timed on a seeded sample of them (see
    :func:`pipeline.data.seconds_to_preprocess`)."""
    rows = frame[frame["status"] == "ok"] if "status" in frame else frame
    sample = list(rows["path"].sample(min(PREPROCESS_TIMING_SAMPLE, len(rows)), random_state=config.seed))
    own = {key.split(".", 1)[1]: value for key, value in user.items() if key.startswith("preprocess.")}

    def foreseen(settings: dict) -> float:
        preprocess = PreprocessConfig(**{**asdict(config.preprocess), **settings, **own})
        return seconds_to_preprocess(sample, len(rows), preprocess, config.train.workers)

    return foreseen


def prepare_data(config: Config, progress: bool = True) -> TrainingData:
    """The earlier stages as needed, then the tensors of the config's split."""
    frame, classes = prepare_split(config, progress)
    return load_training_data(config, frame, classes)


def planned_config(path: str | Path | None = None, overrides: list[str] | None = None,
                   probe: bool = True, progress: bool = True, implied: dict[str, str] | None = None,
                   started: float | None = None) -> tuple[Config, dict]:
    """The plan stage: the config a run trains with, and the record written as ``plan.json``.

    Ingest and split run first when their files are missing (the plan reads their output);
    then :func:`pipeline.fingerprint.fingerprint` and :func:`pipeline.stages.plan.make_plan` fill every
    setting the user left unset. With ``plan = false`` in the config only the fingerprint is
    recorded and the config is used as it is. ``implied``: overrides the command line's options
    imply rather than state, with why (recorded as set by ``command line``, not ``user``).
    ``started``: the ``time.monotonic()`` the command started at, from which a budget for the whole
    command (``train.run_minutes``) counts; the plan gives training what is left of it.
    """
    started = time.monotonic() if started is None else started
    user = flat_keys(user_settings(path, overrides))
    first = load_config(path, overrides)
    listed = manifest = None
    any_finding: list[str] = []  # the healthy class, where --positive asked for any finding
    if first.data.positive_class:
        # The user's positive class widened to the labels that list it, before the split is drawn
        # (and named) for it: over their value, as the split and every later stage see it.
        manifest = prepare_manifest(first, progress)
        if healthy := any_finding_screening(first, manifest_classes(manifest)):
            # as --healthy: the split is drawn for it, and the plan names the abnormal class
            said, any_finding = first.data.positive_class, [f"data.healthy_class={json.dumps(healthy)}"]
            first = load_config(path, [*(overrides or []), 'data.positive_class=""', *any_finding])
        elif listed := findings_screening(first, manifest_classes(manifest)):
            widened = [*(overrides or []), f"data.positive_class={json.dumps(listed[0])}"]
            first, said = load_config(path, widened), first.data.positive_class
    merged, classes = prepare_split(first, progress, manifest)
    fp = fingerprint(merged, classes, seed=first.seed)
    if "preprocess.sequences" in user and user["preprocess.sequences"] != fp["sequences"]:
        # training reads the cases as ingest named them; score would read a new folder's otherwise
        read = ", ".join(fp["sequences"]) or "no cases of sequences"
        if sorted(user["preprocess.sequences"]) == sorted(fp["sequences"]):
            # a model's channels are in the manifest's order, and score reads a new case's in the config's
            read = f"the same sequences in another order: {read}, the channels' order"
        raise ConfigError(f"preprocess.sequences = {user['preprocess.sequences']} is not how ingest read "
                          f"{manifest_path(first)} ({read}), which training reads: leave it unset (the plan sets it "
                          "from the manifest); to read the folder again, delete the manifest and the split files "
                          "named after it")
    screening = healthy_screening(first, classes)
    if any_finding and screening:
        healthy = first.data.healthy_class
        listed = (screening[0], f"not a class, so every class but the healthy one, {healthy!r}, as --healthy "
                                f"{json.dumps(healthy)} screens ({screening[0]})")
    if not first.data.positive_class and not screening and (healthy := healthy_looking(classes)):
        log.warning("no abnormal class given (--positive or --healthy): a %d-class model without a screening "
                    "operating point. %r looks like the healthy class: --healthy %s (HEALTHY=) screens every other "
                    "class as abnormal", len(classes), healthy, json.dumps(healthy))
    if not first.plan:
        log.info("plan: off for this config (plan = false); its settings are used as they are")
        if listed:
            log.info("data.positive_class = %s (--positive %r: %s)", listed[0], said, listed[1])
        if screening:
            first = load_config(path, [*(overrides or []), f"data.positive_class={json.dumps(screening[0])}"])
            log.info("data.positive_class = %s (%s)", *screening)
        return first, {"fingerprint": fp, "settings": {}, "note": "plan = false: the config's settings"}
    minutes = user.get("train.minutes")
    whole = first.train.run_minutes if minutes is None and "train.steps" not in user else 0.0
    if whole:
        minutes = round(left_for_training(whole, started), 2)  # for the probe; set again once it has run
    foresee = preprocessing_timer(merged, first, user) if whole and probe else None
    plan = make_plan(fp, minutes=minutes or None, method=user.get("method.name"), probe=probe, fixed=user,
                     preprocessing=foresee)
    if screening:
        plan.set("data.positive_class", *screening)
    if "train.steps" in user and "train.minutes" not in user:
        plan.set("train.minutes", 0.0, "the user gave train.steps")
    if whole:
        spent = time.monotonic() - started
        plan.set("train.minutes", round(left_for_training(whole, started), 3),
                 f"{whole:g} minutes for the whole run: {spent:.0f} s went to ingest, split and this plan; "
                 f"training ends early enough to leave calibration an evaluation and {CALIBRATION_SECONDS:.0f} s, "
                 "and preprocessing shortens it" + (
                     f" (~{plan.preprocess_seconds:.0f} s foreseen, from scans timed; the steps were planned for "
                     "what is left, and a run that finds them preprocessed trains longer)"
                     if plan.preprocess_seconds else ", as anything else slower than foreseen does"))
    positive = [*any_finding, f"data.positive_class={json.dumps(listed[0])}"] if listed else []
    config = load_config(path, [*(overrides or []), *positive], base=plan.nested())
    record = plan.record(fp, user, config)
    if listed:
        record["settings"]["data.positive_class"].update(
            value=listed[0], set_by="command line", reason=f"--positive {said!r}: {listed[1]}")
    if any_finding:
        record["settings"].setdefault("data.healthy_class", {}).update(
            value=first.data.healthy_class, set_by="command line",
            reason=f"--positive {said!r}: the class that looks healthy")
    for key, why in (implied or {}).items():
        if record["settings"].get(key, {}).get("set_by") == "user":
            record["settings"][key].update(set_by="command line", reason=why)
    for key, path in (("data.manifest", manifest_path(config)), ("data.split", split_path(config))):
        if record["settings"].get(key, {}).get("value") == "":  # "": named after the data; say which file
            record["settings"][key]["resolved"] = str(path)
    for key, entry in record["settings"].items():
        log.info("plan: %s = %s (%s%s)", key, entry.get("resolved", entry["value"]), entry["set_by"],
                 f": {entry['reason']}" if entry.get("reason") and entry["set_by"] != "user" else "")
    return config, record


def train(config: Config, run_dir: str | Path | None = None, progress: bool = True, plan: dict | None = None,
          resume: bool = False, deadline: float | None = None) -> Path:
    """The train stage after the earlier stages whose files are missing (``pipeline train``).
    ``deadline``: the ``time.monotonic()`` by which the command must end (see ``Trainer.fit``)."""
    return train_stage(config, run_dir=run_dir, progress=progress, plan=plan, resume=resume,
                       prepare=lambda: prepare_split(config, progress), deadline=deadline)


def run_all(config: Config, progress: bool = True, plan: dict | None = None,
            run_dir: str | Path | None = None, resume: bool = False, deadline: float | None = None) -> Path:
    from pipeline.trainer import resolve_device

    with distributed.session(resolve_device(config.train.device)) as world:
        run_dir = train(config, run_dir=run_dir, progress=progress, plan=plan, resume=resume, deadline=deadline)
        if world.main:
            calibrate(run_dir)
    return run_dir


