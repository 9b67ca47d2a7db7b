// The page at /: student, teacher and cascade answers side by side, and the text shaded by each
// n-gram's effect (POST /v1/explain). Plain DOM, no build step, no external requests. User text is
// only ever set as textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let teacherLoaded = false;

function headers() {
  const h = { "content-type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.authorization = "Bearer " + key;
  return h;
}

async function call(method, path, body) {
  const answer = await fetch(path, { method, headers: headers(), body: body && JSON.stringify(body) });
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    const message = (data.error && data.error.message) || answer.statusText;
    throw new Error(answer.status + " " + message);
  }
  return data;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

async function loadModels() {
  try {
    const data = await call("GET", "/v1/models");
    const students = data.models.filter((m) => m.kind === "student");
    const teachers = data.models.filter((m) => m.kind === "teacher");
    teacherLoaded = teachers.length > 0;
    const select = $("student");
    select.replaceChildren();
    for (const m of students) {
      const option = el("option", "", m.name);
      option.value = m.name;
      option.selected = m.default;
      select.append(option);
    }
    $("models").textContent = "Loaded: " + data.models.map((m) => m.kind + " " + m.name).join(", ") +
      (teacherLoaded ? "" : " (no teacher: the teacher and cascade columns stay empty)");
    setStatus("");
  } catch (err) {
    setStatus("cannot list the models: " + err.message + " (an API key needed?)", true);
  }
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function bars(scores) {
  const box = el("div");
  for (const [name, p] of Object.entries(scores)) {
    const row = el("div", "bar");
    row.append(el("span", "name", name));
    const track = el("span", "track");
    const fill = el("span", "fill");
    fill.style.width = (100 * p).toFixed(1) + "%";
    fill.style.display = "block";
    track.append(fill);
    row.append(track, el("span", "num", p.toFixed(3)));
    box.append(row);
  }
  return box;
}

function answerBox(title, result, extra) {
  const box = el("div", "answer");
  box.dataset.route = title.toLowerCase();
  box.append(el("h3", "", title));
  if (result instanceof Error) {
    box.classList.add("absent");
    box.append(el("div", "", result.message));
    return box;
  }
  if (!result) {
    box.classList.add("absent");
    box.append(el("div", "", "not available: no teacher is loaded"));
    return box;
  }
  box.append(el("div", "label", result.label), bars(result.scores));
  if (extra) box.append(el("div", "coverage", extra));
  return box;
}

// The text cut at every span boundary; a piece covered by n-grams is shaded by the sum of their
// effects on the predicted label. Spans are code-point offsets, hence Array.from.
function shadedText(text, explanation) {
  const chars = Array.from(text);
  const spans = [];
  for (const g of explanation.ngrams) for (const [s, e] of g.spans) spans.push({ s, e, g });
  const cuts = new Set([0, chars.length]);
  for (const sp of spans) { cuts.add(sp.s); cuts.add(sp.e); }
  const points = [...cuts].sort((a, b) => a - b);
  const maxAbs = Math.max(1e-9, ...explanation.ngrams.map((g) => Math.abs(g.effect)));
  const box = el("div", "shaded");
  for (let i = 0; i + 1 < points.length; i++) {
    const [a, b] = [points[i], points[i + 1]];
    const piece = chars.slice(a, b).join("");
    const covering = spans.filter((sp) => sp.s <= a && sp.e >= b).map((sp) => sp.g);
    if (!covering.length) { box.append(document.createTextNode(piece)); continue; }
    const names = [...new Set(covering.map((g) => g.ngram))];
    const effect = covering.reduce((sum, g) => sum + g.effect, 0);
    const seg = el("span", "seg", piece);
    const rgb = effect >= 0 ? "var(--up)" : "var(--down)";
    seg.style.background = `rgba(${rgb}, ${(0.08 + 0.55 * Math.min(1, Math.abs(effect) / maxAbs)).toFixed(3)})`;
    seg.dataset.ngrams = names.join("|");
    seg.dataset.effect = effect.toFixed(6);
    seg.title = covering.map((g) => `${g.ngram}: ${g.effect >= 0 ? "+" : ""}${g.effect.toFixed(4)}`).join("\n");
    box.append(seg);
  }
  return box;
}

function effectsTable(explanation) {
  const table = el("table", "effects");
  for (const g of explanation.ngrams) {
    const row = el("tr");
    const name = el("td", "ngram", g.ngram);
    name.dataset.ngram = g.ngram;
    row.append(name, el("td", "num", (g.effect >= 0 ? "+" : "") + g.effect.toFixed(4)),
      el("td", "muted", g.count > 1 ? "x" + g.count : ""));
    table.append(row);
  }
  return table;
}

async function settle(promise) {
  try { return await promise; } catch (err) { return err; }
}

async function submit(event) {
  event.preventDefault();
  const texts = $("texts").value.split("\n").map((t) => t.trim()).filter((t) => t);
  if (!texts.length) { setStatus("type a text first", true); return; }
  const model = $("student").value || undefined;
  const topN = Math.max(1, Math.min(100, parseInt($("top-n").value, 10) || 12));
  $("submit").disabled = true;
  setStatus("asking...");
  const started = performance.now();
  const [student, explained, teacher, cascade] = await Promise.all([
    settle(call("POST", "/v1/classify", { texts, model })),
    settle(call("POST", "/v1/explain", { texts, model, top_n: topN })),
    teacherLoaded ? settle(call("POST", "/v1/teacher/classify", { texts })) : null,
    teacherLoaded ? settle(call("POST", "/v1/cascade/classify", { texts, model })) : null,
  ]);
  $("submit").disabled = false;
  if (student instanceof Error) { setStatus(student.message, true); return; }
  setStatus(`answered in ${(performance.now() - started).toFixed(0)} ms`);
  const results = $("results");
  results.replaceChildren();
  texts.forEach((text, i) => {
    const card = el("article", "card");
    card.dataset.index = String(i);
    const ex = explained instanceof Error ? null : explained.results[i];
    card.append(ex ? shadedText(text, ex) : el("div", "shaded", text));
    const s = student.results[i];
    const answers = el("div", "answers");
    answers.append(
      answerBox("Student", s, `coverage ${(100 * s.coverage).toFixed(0)}% (${s.ngrams_found} n-grams found)`),
      answerBox("Teacher", teacher && (teacher instanceof Error ? teacher : teacher.results[i])),
      answerBox("Cascade", cascade && (cascade instanceof Error ? cascade : cascade.results[i]),
        cascade && !(cascade instanceof Error) ? "answered by the " + cascade.results[i].answered_by : ""),
    );
    card.append(answers);
    if (ex) card.append(effectsTable(ex));
    else card.append(el("div", "muted", "no explanation: " + explained.message));
    results.append(card);
  });
}

$("ask").addEventListener("submit", submit);
loadModels();
