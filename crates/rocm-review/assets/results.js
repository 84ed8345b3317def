// The results page: /api/results as a table, one row per criterion and rater (pooled first).
"use strict";

const $ = (id) => document.getElementById(id);
const fixed = (x) => (x === null ? "–" : x.toFixed(3));

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.append(td);
  return td;
}

function bar(result) {
  const box = document.createElement("div");
  box.className = "bar";
  if (result.low !== null) {
    const range = document.createElement("span");
    range.className = "range";
    range.style.left = `${100 * result.low}%`;
    range.style.width = `${100 * (result.high - result.low)}%`;
    const tick = document.createElement("span");
    tick.className = "tick";
    tick.style.left = `${100 * result.win_rate}%`;
    box.append(range, tick);
  }
  return box;
}

async function init() {
  const response = await fetch("/api/results");
  const results = await response.json();
  $("arm-a").textContent = results.a;
  $("arm-b").textContent = results.b;
  $("summary").textContent = `${results.votes} votes on ${results.pairs} pairs by ${results.raters} rater(s).`;
  const body = $("results").querySelector("tbody");
  for (const result of results.rows) {
    const row = document.createElement("tr");
    row.className = result.rater === null ? "pooled" : "rater";
    row.dataset.criterion = result.criterion;
    row.dataset.rater = result.rater === null ? "" : result.rater;
    cell(row, result.rater === null ? result.question : "");
    cell(row, result.rater === null ? "all raters" : result.rater);
    cell(row, result.tally.a + result.tally.b + result.tally.tie, "num");
    cell(row, result.tally.a, "num");
    cell(row, result.tally.tie, "num");
    cell(row, result.tally.b, "num");
    cell(row, fixed(result.win_rate), "num win-rate");
    cell(row, result.low === null ? "–" : `[${fixed(result.low)}, ${fixed(result.high)}]`, "num interval");
    cell(row, "", "bar-cell").append(bar(result));
    body.append(row);
  }
  document.body.dataset.ready = "true";
}

init().catch((err) => {
  $("summary").textContent = err.message;
});
