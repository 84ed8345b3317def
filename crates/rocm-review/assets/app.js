// The voting page: one pair at a time from /api/next, a choice per criterion, the ballot to
// /api/vote; the server keeps the rater's place, so a reload continues where it stopped.
"use strict";

const $ = (id) => document.getElementById(id);
const KEYS = { "1": "left", "2": "right", "0": "tie" };
const BUTTONS = [["left", "1", "Left"], ["tie", "0", "Tie"], ["right", "2", "Right"]];
const state = { rater: null, served: null, criteria: [], answers: {}, current: 0, busy: false };

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(body.error || `${response.status} ${response.statusText}`);
  }
  return body;
}

function buildCriteria() {
  const box = $("criteria");
  state.criteria.forEach((criterion, i) => {
    const row = document.createElement("div");
    row.className = "criterion";
    row.id = `criterion-${criterion.name}`;
    const question = document.createElement("span");
    question.className = "question";
    question.textContent = criterion.question;
    row.append(question);
    for (const [choice, key, text] of BUTTONS) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.choice = choice;
      button.textContent = `${text} (${key})`;
      button.addEventListener("click", () => choose(i, choice));
      row.append(button);
    }
    box.append(row);
  });
}

function render() {
  state.criteria.forEach((criterion, i) => {
    const row = $(`criterion-${criterion.name}`);
    row.classList.toggle("current", i === state.current && !state.busy);
    for (const button of row.querySelectorAll("button")) {
      button.classList.toggle("chosen", state.answers[criterion.name] === button.dataset.choice);
      button.disabled = state.busy;
    }
  });
}

async function start(name) {
  if (!name) return;
  state.rater = name;
  localStorage.setItem("rocm-review-rater", name);
  try {
    await next();
    $("login").hidden = true;
  } catch (err) {
    $("status").textContent = err.message;
  }
}

async function next() {
  const next = await api(`/api/next?rater=${encodeURIComponent(state.rater)}`);
  if (next.finished) {
    state.served = null;
    $("vote").hidden = true;
    $("finished-total").textContent = next.total;
    $("finished").hidden = false;
    return;
  }
  state.served = next;
  state.answers = {};
  state.current = 0;
  $("left").src = next.left;
  $("right").src = next.right;
  $("prompt").textContent = next.prompt;
  $("progress").textContent = `Pair ${next.done + 1} of ${next.total} · ${state.rater}`;
  $("progress").dataset.done = next.done;
  $("status").textContent = "";
  $("vote").hidden = false;
  render();
}

function choose(i, choice) {
  if (state.busy || !state.served) return;
  state.answers[state.criteria[i].name] = choice;
  const open = state.criteria.findIndex((c) => !(c.name in state.answers));
  if (open === -1) {
    submit();
  } else {
    state.current = open;
    render();
  }
}

function back() {
  if (state.busy || !state.served || state.current === 0) return;
  state.current -= 1;
  delete state.answers[state.criteria[state.current].name];
  render();
}

async function submit() {
  state.busy = true;
  render();
  const ballot = { rater: state.rater, pair_id: state.served.pair_id, serve_id: state.served.serve_id };
  Object.assign(ballot, state.answers);
  try {
    await api("/api/vote", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(ballot),
    });
    state.busy = false;
    await next();
  } catch (err) {
    state.busy = false;
    state.answers = {};
    state.current = 0;
    $("status").textContent = `Not saved: ${err.message}`;
    render();
  }
}

function onKey(event) {
  if ($("vote").hidden || event.target.tagName === "INPUT") return;
  if (event.key in KEYS) {
    event.preventDefault();
    choose(state.current, KEYS[event.key]);
  } else if (event.key === "Backspace") {
    event.preventDefault();
    back();
  }
}

async function init() {
  const study = await api("/api/study");
  state.criteria = study.criteria;
  buildCriteria();
  const saved = localStorage.getItem("rocm-review-rater");
  if (saved) $("rater").value = saved;
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    start($("rater").value.trim());
  });
  document.addEventListener("keydown", onKey);
  document.body.dataset.ready = "true";
}

init().catch((err) => {
  $("status").textContent = err.message;
});
