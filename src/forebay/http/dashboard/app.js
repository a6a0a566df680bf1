// The forebay dashboard: reads and acts through the /v1 JSON API of the service that serves it.
// Everything the API returns is put on the page as text (textContent, never innerHTML).
"use strict";

(() => {
  const TOKEN_KEY = "forebay.token";
  const REFRESH_MS = 2000;
  const PAGE_SIZE = 50;
  const FINAL_STATES = new Set(["completed", "dead", "cancelled"]);

  const $ = (id) => document.getElementById(id);

  class ApiError extends Error {
    constructor(status, type, message) {
      super(message);
      this.status = status;
      this.type = type;
    }
  }

  // -- the API ------------------------------------------------------------------------------
  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch {
      return "";
    }
  }

  function storeToken(value) {
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // storage disabled: the token lasts until the page is reloaded
    }
    memoryToken = value;
  }

  let memoryToken = storedToken();

  // One request; never throws on an HTTP error status, only when the service does not answer.
  async function request(method, path, body) {
    const headers = { Accept: "application/json" };
    if (memoryToken) headers.Authorization = "Bearer " + memoryToken;
    const init = { method, headers, cache: "no-store", credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      // Relative to the page, so the service also works mounted under a path prefix.
      response = await fetch(path.replace(/^\//, ""), init);
    } catch (err) {
      showOffline(err);
      throw new ApiError(0, "unreachable", "the forebay service did not answer");
    }
    hideOffline();
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    return { status: response.status, ok: response.ok, data };
  }

  // A /v1 call: the parsed JSON body, or an ApiError carrying the API's own message.
  async function call(method, path, body) {
    const { status, ok, data } = await request(method, path, body);
    if (ok) {
      if (tokenNeeded) tokenAccepted();
      return data;
    }
    const error = data && typeof data === "object" && data.error ? data.error : {};
    const message = typeof error.message === "string" ? error.message : `HTTP ${status}`;
    const err = new ApiError(status, String(error.type || "http_error"), message);
    if (status === 401) askForToken(message);
    throw err;
  }

  // -- small DOM helpers ----------------------------------------------------------------------
  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function showError(id, err) {
    const node = $(id);
    const where = err.status ? ` (HTTP ${err.status} ${err.type})` : "";
    node.textContent = (err.message || String(err)) + where;
    node.hidden = false;
  }

  function hideError(id) {
    const node = $(id);
    node.hidden = true;
    node.textContent = "";
  }

  function formatAge(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Number(seconds);
    if (s < 60) return `${s.toFixed(1)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function formatTime(iso) {
    if (!iso) return "—";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
  }

  function plural(n, word) {
    return `${n} ${word}${n === 1 ? "" : "s"}`;
  }

  // -- connection and token ------------------------------------------------------------------
  function showOffline(err) {
    const node = $("offline");
    node.textContent =
      `Cannot reach the forebay service at ${location.origin} ` +
      `(${err && err.message ? err.message : "no answer"}); retrying every ${REFRESH_MS / 1000} s.`;
    node.hidden = false;
  }

  function hideOffline() {
    $("offline").hidden = true;
  }

  let tokenNeeded = false; // the API answered 401: the token panel stays open until one works

  function askForToken(message) {
    $("token-message").textContent = message;
    $("token-change").hidden = true;
    if (!tokenNeeded) {
      tokenNeeded = true;
      $("token-panel").hidden = false;
      $("token-input").focus();
    }
  }

  function tokenAccepted() {
    tokenNeeded = false;
    $("token-panel").hidden = true;
    $("token-change").hidden = !memoryToken;
  }

  // An action (pause, resume, cancel, run now, replay, purge, seal) the token in use may not
  // do: the panel asks for one that may, and does the action once it is given.
  let pendingAction = null;

  function askForActionToken(err, what, retry) {
    pendingAction = retry;
    $("token-title").textContent = "A token that may act";
    $("token-message").textContent = `${err.message} (HTTP ${err.status} ${err.type})`;
    $("token-retry").textContent = `Give a token with the admin scope to ${what}; it is done then.`;
    $("token-retry").hidden = false;
    $("token-change").hidden = true;
    $("token-panel").hidden = false;
    $("token-input").focus();
  }

  function resetTokenPanel() {
    pendingAction = null;
    $("token-title").textContent = "API token";
    $("token-retry").hidden = true;
    $("token-retry").textContent = "";
  }

  // A POST that acts: its answer, or null once the error is shown in errorId. For a token
  // that may not act, the token panel asks for one, then calls again() (the whole action).
  async function act(errorId, what, path, body, again) {
    try {
      const answer = await call("POST", path, body);
      hideError(errorId);
      return answer;
    } catch (err) {
      showError(errorId, err);
      if (again && (err.status === 403 || err.status === 401)) askForActionToken(err, what, again);
      return null;
    }
  }

  $("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    storeToken($("token-input").value.trim());
    $("token-input").value = "";
    $("token-message").textContent = "";
    $("token-panel").hidden = true;
    $("token-change").hidden = !memoryToken;
    tokenNeeded = false;
    lastDead = null;
    const retry = pendingAction;
    resetTokenPanel();
    if (retry !== null) await retry();
    refreshNow();
  });

  $("token-forget").addEventListener("click", () => {
    resetTokenPanel();
    storeToken("");
    $("token-input").value = "";
    $("token-message").textContent = "";
    $("token-panel").hidden = true;
    $("token-change").hidden = true;
    tokenNeeded = false;
    lastDead = null;
    refreshNow(); // a service that needs a token answers 401 and the panel opens again
  });

  $("token-change").addEventListener("click", () => {
    $("token-message").textContent = "";
    $("token-panel").hidden = false;
    $("token-change").hidden = true;
    $("token-input").focus();
  });

  // -- health badge --------------------------------------------------------------------------
  async function loadHealth() {
    const badge = $("health");
    const detail = $("health-detail");
    let answer;
    try {
      answer = await request("GET", "/readyz");
    } catch {
      badge.textContent = "unreachable";
      badge.dataset.state = "down";
      detail.textContent = "";
      return;
    }
    const data = answer.data && typeof answer.data === "object" ? answer.data : {};
    const parts = [];
    const backend = data.backend || {};
    parts.push(backend.ok ? "backend reachable" : `backend unreachable: ${backend.error || "?"}`);
    const workers = data.workers;
    if (workers === null || workers === undefined) {
      parts.push("no workers in this process");
    } else if (!workers.running) {
      parts.push("workers stopped");
    } else if (workers.fresh) {
      parts.push("workers fresh");
    } else {
      parts.push(`workers stale (last heartbeat ${formatAge(workers.last_heartbeat_age_s)} ago)`);
    }
    const ready = data.ready === true && answer.ok;
    badge.textContent = ready ? "ready" : "not ready";
    badge.dataset.state = ready ? "ok" : "down";
    detail.textContent = parts.join(" · ");
  }

  // -- queues --------------------------------------------------------------------------------
  const QUEUE_COLUMNS = [
    "waiting",
    "queued",
    "scheduled",
    "retrying",
    "running",
    "stalled",
    "completed",
    "dead",
    "cancelled",
  ];
  let queueNames = [];

  // GET path; on failure show the error in errorId and answer null.
  async function load(errorId, path) {
    try {
      const data = await call("GET", path);
      hideError(errorId);
      return data;
    } catch (err) {
      showError(errorId, err);
      return null;
    }
  }

  async function loadQueues() {
    const data = await load("queues-error", "/v1/queues");
    if (data !== null) renderQueues(Array.isArray(data.queues) ? data.queues : []);
  }

  // Pause or resume a queue for every worker (admin scope), then show the queues again.
  async function setPaused(queue, pause) {
    const action = pause ? "pause" : "resume";
    const path = `/v1/queues/${encodeURIComponent(queue)}/${action}`;
    await act("queues-error", `${action} queue ${queue}`, path, undefined, () =>
      setPaused(queue, pause),
    );
    await loadQueues();
  }

  function renderQueues(queues) {
    const rows = queues.map((q) => {
      const tr = el("tr");
      tr.dataset.queue = String(q.queue);
      const name = el("th");
      name.append(el("span", q.queue, "name"));
      name.scope = "row";
      if (q.declared === false) name.append(el("span", " (not declared)", "muted"));
      if (q.paused === true) {
        const badge = el("span", "paused", "badge paused");
        badge.title = "No worker leases this queue; enqueues are accepted";
        name.append(" ", badge);
      }
      tr.append(name);
      const limits = q.limits && typeof q.limits === "object" ? q.limits : {};
      const cap = Number.isInteger(limits.concurrency) ? limits.concurrency : null;
      for (const column of QUEUE_COLUMNS) {
        const value = q[column] ?? 0;
        const shown = column === "running" && cap !== null ? `${value}/${cap}` : value;
        const td = el("td", shown, value === 0 ? "num zero" : "num");
        td.dataset.col = column;
        if (column === "running" && cap !== null) {
          td.title = `${value} running of a cap of ${cap} across the fleet`;
          if (value >= cap) td.classList.add("at-cap");
        }
        tr.append(td);
        if (column === "running") tr.append(throttledCell(q.throttled));
      }
      const age = el("td", formatAge(q.oldest_queued_age_s), "num");
      age.dataset.col = "oldest_queued_age_s";
      tr.append(age);
      tr.append(limitsCell(limits));
      const toggle = el("button", q.paused === true ? "Resume" : "Pause");
      toggle.type = "button";
      toggle.className = "pause-toggle";
      toggle.addEventListener("click", () => setPaused(String(q.queue), q.paused !== true));
      const actions = el("td");
      actions.append(toggle);
      tr.append(actions);
      return tr;
    });
    $("queues-body").replaceChildren(...rows);
    $("queues-empty").hidden = rows.length > 0;
    updateQueueChoices(queues.map((q) => String(q.queue)));
  }

  function throttledCell(throttled) {
    const value = Number.isInteger(throttled) ? throttled : 0;
    const td = el("td", value, value === 0 ? "num zero" : "num throttled");
    td.dataset.col = "throttled";
    return td;
  }

  // "50/s", "10/m", "5/10s": a rate as {count, period_s, burst}, as `forebay stats` writes it.
  const RATE_UNITS = [
    [1, "s"],
    [60, "m"],
    [3600, "h"],
    [86400, "d"],
  ];
  function rateText(rate) {
    const count = Number(rate.count);
    const period = Number(rate.period_s);
    const unit = RATE_UNITS.find(([seconds]) => seconds === period);
    return unit ? `${count}/${unit[1]}` : `${count}/${period}s`;
  }

  // The limits cell: "rate 50/s, cap 4, fair", each limit kept on one line; a dash for none.
  function limitsCell(limits) {
    const parts = describeLimits(limits);
    const td = el("td", parts.length ? null : "—", parts.length ? "limits" : "limits zero");
    td.dataset.col = "limits";
    parts.forEach((part, i) => {
      if (i > 0) td.append(", ");
      td.append(el("span", part, "limit"));
    });
    return td;
  }

  // A queue's flow limits, as `forebay stats` shows them: ["rate 50/s", "cap 4", "fair"].
  function describeLimits(limits) {
    const parts = [];
    const isRate = (r) => r && typeof r === "object" && Number.isFinite(Number(r.count));
    if (isRate(limits.rate)) parts.push(`rate ${rateText(limits.rate)}`);
    if (isRate(limits.rate_per_key)) parts.push(`${rateText(limits.rate_per_key)} per key`);
    if (Number.isInteger(limits.concurrency)) parts.push(`cap ${limits.concurrency}`);
    if (Number.isInteger(limits.concurrency_per_key)) {
      parts.push(`${limits.concurrency_per_key} running per key`);
    }
    if (limits.fair === true) parts.push("fair");
    if (Number.isFinite(limits.aging_s)) parts.push(`aging +1/${limits.aging_s}s`);
    return parts;
  }

  function updateQueueChoices(names) {
    if (names.join("\n") === queueNames.join("\n")) return;
    queueNames = names;
    for (const id of ["dead-queue", "jobs-queue", "throughput-queue"]) {
      const select = $(id);
      const chosen = select.value;
      const options = [el("option", "all queues")];
      options[0].value = "";
      for (const name of names) {
        const option = el("option", name);
        option.value = name;
        options.push(option);
      }
      select.replaceChildren(...options);
      select.value = names.includes(chosen) ? chosen : "";
    }
  }

  function jobLinkCell(id) {
    const cell = el("td");
    const link = el("button", id, "link");
    link.type = "button";
    link.title = "Show this job";
    link.addEventListener("click", () => {
      showJob(id);
      $("job").scrollIntoView();
    });
    cell.append(link);
    return cell;
  }

  // -- workers ---------------------------------------------------------------------------------
  // A worker is stale once half its record's lifetime passed without a heartbeat (it saves
  // its record every third of it): it may be stuck, and drops out of the list at expires_at.
  function workerStatus(worker, nowMs) {
    const seen = new Date(worker.last_seen).getTime();
    const ttlMs = new Date(worker.expires_at).getTime() - seen;
    const badges = [];
    if (worker.stopping === true) badges.push(["stopping", "finishing its running jobs, leasing no more"]);
    if (Number.isFinite(seen) && nowMs - seen > ttlMs / 2) {
      badges.push(["stale", `no heartbeat for ${formatAge((nowMs - seen) / 1000)}`]);
    }
    if (!badges.length) badges.push(["live", "heartbeating"]);
    return badges;
  }

  async function loadWorkers() {
    const data = await load("workers-error", "/v1/workers");
    if (data === null) return;
    renderWorkers(
      Array.isArray(data.workers) ? data.workers : [],
      Array.isArray(data.queues) ? data.queues : [],
    );
  }

  function renderWorkers(workers, queues) {
    const nowMs = Date.now();
    const rows = workers.map((w) => {
      const tr = el("tr");
      tr.dataset.workerId = String(w.id);
      const name = el("th", w.id);
      name.scope = "row";
      const status = el("td", null, "status");
      for (const [badge, title] of workerStatus(w, nowMs)) {
        const span = el("span", badge, `badge ${badge}`);
        span.title = title;
        status.append(span, " ");
      }
      const running = el("td", `${w.running}/${w.concurrency}`, "num");
      running.dataset.col = "running";
      const completed = el("td", w.completed, "num");
      completed.dataset.col = "completed";
      const failed = el("td", w.failed, w.failed ? "num" : "num zero");
      failed.dataset.col = "failed";
      const queuesCell = el("td", Array.isArray(w.queues) ? w.queues.join(", ") : "");
      queuesCell.dataset.col = "queues";
      const seen = el("td", `${formatAge((nowMs - new Date(w.last_seen).getTime()) / 1000)} ago`);
      seen.dataset.col = "last_seen";
      seen.title = formatTime(w.last_seen);
      tr.append(
        name,
        status,
        el("td", w.host),
        el("td", w.pid, "num"),
        queuesCell,
        running,
        completed,
        failed,
        el("td", w.version),
        el("td", formatTime(w.started_at)),
        seen,
      );
      return tr;
    });
    $("workers-body").replaceChildren(...rows);
    $("workers-empty").hidden = rows.length > 0;
    const running = workers.reduce((n, w) => n + (Number(w.running) || 0), 0);
    const slots = workers.reduce((n, w) => n + (Number(w.concurrency) || 0), 0);
    $("workers-summary").textContent =
      `${plural(workers.length, "live worker")}, running ${running} of ${slots} slots.`;
    const consumers = queues.map((q) => {
      const tr = el("tr");
      tr.dataset.queue = String(q.queue);
      const name = el("th");
      name.append(el("span", q.queue, "name"));
      name.scope = "row";
      if (!q.workers) {
        const badge = el("span", "no live worker", "badge unconsumed");
        badge.title = "Jobs of this queue are stored but nothing runs them now";
        name.append(" ", badge);
      }
      const count = el("td", q.workers, q.workers ? "num" : "num zero");
      count.dataset.col = "workers";
      const slotsCell = el("td", q.concurrency, q.concurrency ? "num" : "num zero");
      slotsCell.dataset.col = "concurrency";
      tr.append(name, count, slotsCell);
      return tr;
    });
    $("consumers-body").replaceChildren(...consumers);
  }

  // -- throughput ------------------------------------------------------------------------------
  const SVG = "http://www.w3.org/2000/svg";
  const CHART_HEIGHT = 170;
  const CHART_PAD = { left: 34, right: 8, top: 10, bottom: 22 };
  let lastThroughput = null;

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    return node;
  }

  async function loadThroughput() {
    const params = new URLSearchParams({ minutes: $("throughput-window").value });
    if ($("throughput-queue").value) params.set("queue", $("throughput-queue").value);
    const data = await load("throughput-error", `/v1/throughput?${params}`);
    if (data === null) return;
    lastThroughput = data;
    renderThroughput(data);
  }

  // The series as one bucket per minute (every queue added up), oldest first.
  function perMinute(data) {
    const minutes = Number(data.minutes) || 60;
    const start = new Date(data.since).getTime();
    const buckets = [];
    for (let i = 0; i < minutes; i += 1) {
      buckets.push({ at: start + i * 60000, completed: 0, dead: 0, reclaimed: 0 });
    }
    for (const row of Array.isArray(data.series) ? data.series : []) {
      const i = Math.round((new Date(row.minute).getTime() - start) / 60000);
      if (i < 0 || i >= minutes) continue;
      buckets[i].completed += Number(row.completed) || 0;
      buckets[i].dead += Number(row.dead) || 0;
      buckets[i].reclaimed += Number(row.reclaimed) || 0;
    }
    return buckets;
  }

  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function renderThroughput(data) {
    const buckets = perMinute(data);
    const sum = (name) => buckets.reduce((n, b) => n + b[name], 0);
    const span = $("throughput-window").selectedOptions[0].textContent;
    const reclaimed = sum("reclaimed");
    $("throughput-summary").textContent =
      `Last ${span}: ${sum("completed")} completed, ${sum("dead")} dead` +
      (reclaimed ? `, ${reclaimed} leases reclaimed.` : ".");
    drawChart(buckets);
    const totals = (Array.isArray(data.totals) ? data.totals : []).map((t) => {
      const tr = el("tr");
      tr.dataset.queue = String(t.queue);
      const name = el("th", t.queue);
      name.scope = "row";
      tr.append(name);
      for (const column of ["completed", "dead", "reclaimed"]) {
        const td = el("td", t[column], t[column] ? "num" : "num zero");
        td.dataset.col = column;
        tr.append(td);
      }
      return tr;
    });
    $("throughput-totals-body").replaceChildren(...totals);
  }

  // Stacked bars per minute, completed below dead, drawn to the box's width.
  function drawChart(buckets) {
    const box = $("throughput-chart");
    const width = Math.max(box.clientWidth, 200);
    const plotW = width - CHART_PAD.left - CHART_PAD.right;
    const plotH = CHART_HEIGHT - CHART_PAD.top - CHART_PAD.bottom;
    const top = Math.max(1, ...buckets.map((b) => b.completed + b.dead));
    const step = plotW / buckets.length;
    const y = (n) => CHART_PAD.top + plotH - (n / top) * plotH;
    const chart = svg("svg", {
      width,
      height: CHART_HEIGHT,
      viewBox: `0 0 ${width} ${CHART_HEIGHT}`,
      role: "img",
      "aria-label": "Jobs completed and dead per minute",
    });
    chart.append(
      svg("line", { x1: CHART_PAD.left, x2: width - CHART_PAD.right, y1: y(0), y2: y(0), class: "axis" }),
      svg("line", { x1: CHART_PAD.left, x2: width - CHART_PAD.right, y1: y(top), y2: y(top), class: "grid" }),
    );
    const label = (text, x, yPos, anchor) => {
      const node = svg("text", { x, y: yPos, "text-anchor": anchor, class: "tick" });
      node.textContent = text;
      return node;
    };
    chart.append(label(String(top), CHART_PAD.left - 4, y(top) + 4, "end"));
    chart.append(label("0", CHART_PAD.left - 4, y(0) + 4, "end"));
    const bottom = CHART_HEIGHT - 6;
    chart.append(label(clock(buckets[0].at), CHART_PAD.left, bottom, "start"));
    chart.append(label(clock(buckets[buckets.length - 1].at), width - CHART_PAD.right, bottom, "end"));
    const gap = step > 4 ? 1 : 0;
    buckets.forEach((b, i) => {
      const group = svg("g", { class: "minute" });
      group.dataset.minute = new Date(b.at).toISOString();
      group.dataset.completed = String(b.completed);
      group.dataset.dead = String(b.dead);
      const title = svg("title");
      title.textContent = `${clock(b.at)}: ${b.completed} completed, ${b.dead} dead`;
      group.append(title);
      const x = CHART_PAD.left + i * step;
      const w = Math.max(step - gap, 0.5);
      // a transparent hit area over the whole minute, so its title shows on hover
      group.append(svg("rect", { x, y: CHART_PAD.top, width: w, height: plotH, class: "hit" }));
      if (b.completed) {
        group.append(svg("rect", { x, y: y(b.completed), width: w, height: y(0) - y(b.completed), class: "completed" }));
      }
      if (b.dead) {
        const base = y(b.completed);
        group.append(svg("rect", { x, y: y(b.completed + b.dead), width: w, height: base - y(b.completed + b.dead), class: "dead" }));
      }
      chart.append(group);
    });
    box.replaceChildren(chart);
  }

  $("throughput-window").addEventListener("change", () => loadThroughput());
  $("throughput-queue").addEventListener("change", () => loadThroughput());
  $("throughput-filter").addEventListener("submit", (event) => event.preventDefault());

  let resizing = null;
  window.addEventListener("resize", () => {
    if (resizing !== null) cancelAnimationFrame(resizing);
    resizing = requestAnimationFrame(() => {
      resizing = null;
      if (lastThroughput !== null) drawChart(perMinute(lastThroughput));
    });
  });

  // -- runs ----------------------------------------------------------------------------------
  const RUNS_LIMIT = 20;
  const RUN_COUNTS = ["waiting", "queued", "running", "completed", "dead", "cancelled"];
  let shownRunId = null;

  function finished(run) {
    return (Number(run.completed) || 0) + (Number(run.dead) || 0) + (Number(run.cancelled) || 0);
  }

  // The bar of a run's finished jobs; an empty run has no total yet (an indeterminate bar).
  function fillProgress(bar, run) {
    const total = Number(run.total) || 0;
    if (total === 0) {
      bar.removeAttribute("value");
    } else {
      bar.max = total;
      bar.value = finished(run);
    }
    bar.title = `${finished(run)} of ${total} jobs finished`;
  }

  function runLabel(run) {
    return run.name ? String(run.name) : String(run.id).slice(0, 12) + "…";
  }

  async function loadRuns() {
    const params = new URLSearchParams({ limit: String(RUNS_LIMIT) });
    if ($("runs-state").value) params.set("state", $("runs-state").value);
    const data = await load("runs-error", `/v1/runs?${params}`);
    if (data !== null) renderRuns(Array.isArray(data.runs) ? data.runs : []);
  }

  function renderRuns(runs) {
    const rows = runs.map((run) => {
      const tr = el("tr");
      tr.dataset.runId = String(run.id);
      const name = el("th");
      name.scope = "row";
      const link = el("button", runLabel(run), "link");
      link.type = "button";
      link.title = `Show run ${run.id}`;
      link.addEventListener("click", () => showRun(String(run.id)));
      name.append(link);
      const state = el("td", run.state, "state");
      state.dataset.state = String(run.state);
      const progress = el("td");
      progress.dataset.col = "progress";
      const bar = el("progress");
      fillProgress(bar, run);
      progress.append(bar, ` ${finished(run)}/${run.total}`);
      tr.append(name, state, progress);
      for (const column of RUN_COUNTS) {
        const value = run[column] ?? 0;
        const td = el("td", value, value === 0 ? "num zero" : "num");
        td.dataset.col = column;
        tr.append(td);
      }
      tr.append(el("td", formatTime(run.created_at)));
      return tr;
    });
    $("runs-body").replaceChildren(...rows);
    $("runs-empty").hidden = rows.length > 0;
  }

  $("runs-state").addEventListener("change", () => loadRuns());
  $("runs-filter").addEventListener("submit", (event) => event.preventDefault());

  async function showRun(id) {
    shownRunId = id;
    $("run-status").textContent = "";
    await loadRun();
  }

  async function loadRun() {
    if (shownRunId === null) return;
    const id = shownRunId;
    let run;
    try {
      run = await call("GET", `/v1/runs/${encodeURIComponent(id)}`);
    } catch (err) {
      if (id !== shownRunId) return;
      showError("runs-error", err);
      if (err.status === 404) $("run-view").hidden = true;
      return;
    }
    if (id !== shownRunId) return;
    renderRun(run);
  }

  function renderRun(run) {
    $("run-title").textContent = `Run ${runLabel(run)}`;
    fillProgress($("run-progress"), run);
    const fields = [
      ["id", run.id, "run-id"],
      ["name", run.name ?? "—"],
      ["key", run.key ?? "—"],
      ["state", run.state, "run-state"],
      ["finished", `${finished(run)} of ${run.total}`, "run-finished"],
      ...RUN_COUNTS.map((name) => [name, run[name] ?? 0, `run-count-${name}`]),
      ["total", run.total, "run-count-total"],
      ["on complete", run.on_complete ?? "—"],
      ["webhook", run.webhook ?? "—"],
      ["started", formatTime(run.created_at)],
      ["sealed", formatTime(run.sealed_at)],
      ["completed at", formatTime(run.completed_at), "run-completed-at"],
    ];
    const nodes = [];
    for (const [label, value, id] of fields) {
      const dd = el("dd", value);
      if (id) dd.id = id;
      if (label === "state") {
        dd.className = "state";
        dd.dataset.state = String(value);
      }
      nodes.push(el("dt", label), dd);
    }
    $("run-fields").replaceChildren(...nodes);
    const meta = run.meta && typeof run.meta === "object" ? run.meta : {};
    $("run-meta-section").hidden = Object.keys(meta).length === 0;
    $("run-meta").textContent = JSON.stringify(meta, null, 2);
    $("run-seal").hidden = run.state !== "open";
    $("run-view").hidden = false;
  }

  async function sealRun(id) {
    const path = `/v1/runs/${encodeURIComponent(id)}/seal`;
    const run = await act("runs-error", "seal the run", path, undefined, () => sealRun(id));
    if (run === null) return;
    if (id === shownRunId) renderRun(run);
    $("run-status").textContent = `Run ${runLabel(run)} sealed.`;
    loadRuns();
  }

  $("run-seal").addEventListener("click", () => {
    if (shownRunId !== null) sealRun(shownRunId);
  });

  $("run-jobs").addEventListener("click", () => {
    if (shownRunId === null) return;
    filterJobs({ run_id: shownRunId });
    $("recent").scrollIntoView();
  });

  // -- schedules -----------------------------------------------------------------------------
  async function loadSchedules() {
    const data = await load("schedules-error", "/v1/schedules");
    if (data !== null) renderSchedules(Array.isArray(data.schedules) ? data.schedules : []);
  }

  function renderSchedules(schedules) {
    const rows = schedules.map((s) => {
      const tr = el("tr");
      tr.dataset.schedule = String(s.name);
      const name = el("th", s.name);
      name.scope = "row";
      const timing = s.cron ?? `every ${formatAge(s.every_s)}`;
      tr.append(
        name,
        el("td", s.queue),
        el("td", timing),
        el("td", s.tz),
        el("td", formatTime(s.next_tick)),
        el("td", s.last_tick ? formatTime(s.last_tick) : "never"),
      );
      return tr;
    });
    $("schedules-body").replaceChildren(...rows);
    $("schedules-empty").hidden = rows.length > 0;
  }

  // -- jobs, by queue, state, key and run -------------------------------------------------------
  const JOBS_LIMIT = 25;
  const jobsFilter = { queue: "", state: "", key: "", run_id: "" };
  let jobsBefore = null; // the page shown: null is the newest
  const newerJobPages = [];
  let nextJobsBefore = null;

  async function loadRecent() {
    const params = new URLSearchParams({ limit: String(JOBS_LIMIT) });
    for (const [name, value] of Object.entries(jobsFilter)) if (value) params.set(name, value);
    if (jobsBefore !== null) params.set("before_id", String(jobsBefore));
    const data = await load("recent-error", `/v1/jobs?${params}`);
    if (data === null) {
      $("recent-body").replaceChildren();
      $("recent-empty").hidden = true;
      return;
    }
    renderRecent(Array.isArray(data.jobs) ? data.jobs : [], data.next_before_id ?? null);
  }

  function progressText(job) {
    const pct = job.progress === null || job.progress === undefined ? "" : `${job.progress}%`;
    return [pct, job.progress_message ?? ""].filter(Boolean).join(" ");
  }

  function runFilterCell(runId) {
    const cell = el("td");
    if (!runId) {
      cell.textContent = "—";
      return cell;
    }
    const link = el("button", String(runId).slice(0, 12) + (String(runId).length > 12 ? "…" : ""), "link");
    link.type = "button";
    link.title = `Show the jobs of run ${runId}`;
    link.addEventListener("click", () => filterJobs({ run_id: String(runId) }));
    cell.append(link);
    return cell;
  }

  function renderRecent(jobs, next) {
    nextJobsBefore = next;
    const rows = jobs.map((job) => {
      const tr = el("tr");
      tr.dataset.jobId = String(job.id);
      const idCell = jobLinkCell(job.id);
      const state = el("td", shownState(job), "state");
      state.dataset.state = shownState(job);
      tr.append(
        idCell,
        el("td", job.queue),
        state,
        el("td", job.attempt, "num"),
        el("td", progressText(job) || "—"),
        el("td", formatTime(job.updated_at)),
        el("td", job.key ?? "—", "key"),
        runFilterCell(job.run_id),
      );
      return tr;
    });
    $("recent-body").replaceChildren(...rows);
    $("recent-empty").hidden = rows.length > 0;
    $("jobs-newer").disabled = jobsBefore === null;
    $("jobs-older").disabled = nextJobsBefore === null;
    $("jobs-page").textContent = `page ${newerJobPages.length + 1}`;
  }

  // Show the first page of the jobs that match `given` (the form shows it too).
  function filterJobs(given) {
    Object.assign(jobsFilter, { queue: "", state: "", key: "", run_id: "" }, given);
    $("jobs-queue").value = jobsFilter.queue;
    $("jobs-state").value = jobsFilter.state;
    $("jobs-key").value = jobsFilter.key;
    $("jobs-run").value = jobsFilter.run_id;
    jobsBefore = null;
    newerJobPages.length = 0;
    return loadRecent();
  }

  $("jobs-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    filterJobs({
      queue: $("jobs-queue").value,
      state: $("jobs-state").value,
      key: $("jobs-key").value.trim(),
      run_id: $("jobs-run").value.trim(),
    });
  });

  for (const id of ["jobs-queue", "jobs-state"]) {
    $(id).addEventListener("change", () => $("jobs-filter").requestSubmit());
  }

  $("jobs-clear").addEventListener("click", () => filterJobs({}));

  $("jobs-older").addEventListener("click", () => {
    if (nextJobsBefore === null) return;
    newerJobPages.push(jobsBefore);
    jobsBefore = nextJobsBefore;
    loadRecent();
  });

  $("jobs-newer").addEventListener("click", () => {
    if (jobsBefore === null) return;
    jobsBefore = newerJobPages.length ? newerJobPages.pop() : null;
    loadRecent();
  });

  // -- job lookup ----------------------------------------------------------------------------
  let shownJobId = null;

  $("job-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("job-id").value.trim();
    if (!/^[0-9]+$/.test(id) || /^0+$/.test(id)) {
      showError("job-error", new ApiError(0, "", "a job id is a positive whole number"));
      return;
    }
    showJob(id);
  });

  async function showJob(id) {
    shownJobId = String(id);
    $("job-id").value = shownJobId;
    $("job-status").textContent = "";
    if (location.hash !== `#job-${shownJobId}`) history.replaceState(null, "", `#job-${shownJobId}`);
    await loadJob();
  }

  // While the shown job runs it is read again every LIVE_MS (its progress moves); otherwise
  // with the rest of the page.
  const LIVE_MS = 500;
  let liveTimer = null;

  function followJob(job) {
    if (liveTimer !== null) clearTimeout(liveTimer);
    liveTimer = null;
    const live = job.state === "running";
    $("job-live").hidden = !live;
    if (live && !document.hidden) {
      liveTimer = setTimeout(() => {
        liveTimer = null;
        loadJob();
      }, LIVE_MS);
    }
  }

  async function loadJob() {
    if (shownJobId === null) return;
    const id = shownJobId;
    let job;
    try {
      job = await call("GET", `/v1/jobs/${encodeURIComponent(id)}`);
    } catch (err) {
      if (id !== shownJobId) return;
      showError("job-error", err);
      if (err.status === 404 || err.status === 400) $("job-view").hidden = true;
      return;
    }
    if (id !== shownJobId) return;
    hideError("job-error");
    renderJob(job);
    followJob(job);
  }

  // A running job whose lease expired shows as "stalled" (its stored state stays running).
  function shownState(job) {
    return job.stalled === true ? "stalled" : String(job.state);
  }

  function renderJob(job) {
    const bar = $("job-progress-bar");
    const reported = job.progress !== null && job.progress !== undefined;
    bar.hidden = !reported; // no bar for a job that reported no progress
    bar.value = reported ? Number(job.progress) : 0;
    bar.title = reported ? `${job.progress}%` : "";
    const progress =
      job.progress === null || job.progress === undefined
        ? "—"
        : `${job.progress}%` + (job.progress_message ? ` — ${job.progress_message}` : "");
    const fields = [
      ["id", job.id, "job-field-id"],
      ["queue", job.queue],
      ["state", shownState(job), "job-state"],
      ["key", job.key ?? "—"],
      ["priority", job.priority],
      ["attempt", job.attempt, "job-attempt"],
      ["deliveries", job.deliveries],
      ["defers", job.defers],
      ["progress", progress, "job-progress"],
      ["error type", job.error_type ?? "—"],
      ["error", job.error ?? "—", "job-error-text"],
      ["run", job.run_id ?? "—", "job-run"],
      ["after", Array.isArray(job.after) && job.after.length ? job.after.join(", ") : "—", "job-after"],
      ["after policy", job.after_policy ?? "—"],
      ["parent", job.parent_id ?? "—", "job-parent"],
      ["webhook", job.webhook ?? "—"],
      ["created", formatTime(job.created_at)],
      ["run at", formatTime(job.run_at)],
      ["updated", formatTime(job.updated_at)],
      ["started", formatTime(job.started_at), "job-started"],
      ["finished", formatTime(job.finished_at)],
      ["lease expires", formatTime(job.lease_expires_at)],
      ["worker", job.worker_id ?? "—"],
    ];
    const nodes = [];
    for (const [label, value, id] of fields) {
      const dd = el("dd", value);
      if (id) dd.id = id;
      if (label === "state") {
        dd.className = "state";
        dd.dataset.state = String(value);
      }
      nodes.push(el("dt", label), dd);
    }
    $("job-fields").replaceChildren(...nodes);
    $("job-payload").textContent = JSON.stringify(job.payload, null, 2);
    const hasResult = job.result !== null && job.result !== undefined;
    $("job-result-section").hidden = !hasResult;
    $("job-result").textContent = hasResult ? JSON.stringify(job.result, null, 2) : "";
    renderErrors(Array.isArray(job.errors) ? job.errors : []);
    $("job-cancel").hidden = !["waiting", "queued", "running"].includes(job.state);
    $("job-run-now").hidden = job.state !== "queued";
    $("job-view").hidden = false;
  }

  // The errors of the job's last failed attempts, oldest first, each traceback in a <pre>.
  function renderErrors(errors) {
    const nodes = [];
    for (const e of errors) {
      const item = el("li", null, "attempt-error");
      const head = el("p", null, "attempt-head");
      head.append(
        el("strong", `attempt ${e.attempt}`),
        el("span", ` ${formatTime(e.at)} `, "muted"),
        el("span", e.message, "error-text"),
      );
      item.append(head);
      if (e.traceback) item.append(el("pre", e.traceback, "traceback"));
      nodes.push(item);
    }
    $("job-errors").replaceChildren(...nodes);
    $("job-errors-section").hidden = errors.length === 0;
  }

  async function jobAction(id, action, done) {
    const path = `/v1/jobs/${encodeURIComponent(id)}/${action}`;
    const what = action === "cancel" ? `cancel job ${id}` : `run job ${id} now`;
    const job = await act("job-error", what, path, undefined, () => jobAction(id, action, done));
    if (job === null) return;
    if (String(id) === shownJobId) {
      renderJob(job);
      followJob(job);
    }
    $("job-status").textContent = done;
    loadQueues();
    loadRecent();
  }

  $("job-cancel").addEventListener("click", () => {
    const id = shownJobId;
    if (id !== null) jobAction(id, "cancel", `Job ${id} cancelled.`);
  });

  $("job-run-now").addEventListener("click", () => {
    const id = shownJobId;
    if (id !== null) jobAction(id, "run-now", `Job ${id} is due now.`);
  });

  function jobFromHash() {
    const match = /^#job-([1-9][0-9]*)$/.exec(location.hash);
    if (match && match[1] !== shownJobId) showJob(match[1]);
  }

  window.addEventListener("hashchange", jobFromHash);

  // -- dead letters --------------------------------------------------------------------------
  const deadFilter = { queue: "", error_type: "" };
  let beforeId = null; // the page shown: null is the newest
  const newerPages = []; // before_id of each newer page, to go back
  let nextBeforeId = null;
  let shownDeadIds = [];
  let lastDead = null; // the last page rendered, to skip re-rendering an unchanged page
  let pendingDead = null;

  function filterBody() {
    const body = {};
    if (deadFilter.queue) body.queue = deadFilter.queue;
    if (deadFilter.error_type) body.error_type = deadFilter.error_type;
    return body;
  }

  async function loadDead() {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    for (const [name, value] of Object.entries(filterBody())) params.set(name, value);
    if (beforeId !== null) params.set("before_id", String(beforeId));
    let data;
    try {
      data = await call("GET", `/v1/dead?${params}`);
    } catch (err) {
      showError("dead-error", err);
      return;
    }
    hideError("dead-error");
    const key = JSON.stringify([beforeId, data]);
    if (key === lastDead) return;
    lastDead = key;
    renderDead(Array.isArray(data.jobs) ? data.jobs : [], data.next_before_id ?? null);
  }

  function renderDead(jobs, next) {
    nextBeforeId = next;
    shownDeadIds = jobs.map((job) => job.id);
    const rows = jobs.map((job) => {
      const tr = el("tr");
      tr.dataset.jobId = String(job.id);
      const idCell = jobLinkCell(job.id);
      const error = el("td", job.error ?? "", "error-text");
      error.title = String(job.error ?? "");
      const replay = el("button", "Replay");
      replay.type = "button";
      replay.className = "replay";
      replay.addEventListener("click", () => replayOne(job.id));
      const actions = el("td");
      actions.append(replay);
      tr.append(
        idCell,
        el("td", job.queue),
        el("td", job.error_type ?? "—"),
        error,
        el("td", job.attempt, "num"),
        el("td", formatTime(job.updated_at)),
        actions,
      );
      return tr;
    });
    $("dead-body").replaceChildren(...rows);
    $("dead-empty").hidden = rows.length > 0;
    $("dead-newer").disabled = beforeId === null;
    $("dead-older").disabled = nextBeforeId === null;
    $("dead-page").textContent = `page ${newerPages.length + 1}`;
  }

  function reloadDead() {
    lastDead = null;
    return loadDead();
  }

  function firstDeadPage() {
    beforeId = null;
    newerPages.length = 0;
    dismissConfirm();
    return reloadDead();
  }

  $("dead-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    deadFilter.queue = $("dead-queue").value;
    deadFilter.error_type = $("dead-error-type").value.trim();
    firstDeadPage();
  });

  $("dead-queue").addEventListener("change", () => {
    deadFilter.queue = $("dead-queue").value;
    firstDeadPage();
  });

  $("dead-older").addEventListener("click", () => {
    if (nextBeforeId === null) return;
    newerPages.push(beforeId);
    beforeId = nextBeforeId;
    dismissConfirm();
    reloadDead();
  });

  $("dead-newer").addEventListener("click", () => {
    if (beforeId === null) return;
    beforeId = newerPages.length ? newerPages.pop() : null;
    dismissConfirm();
    reloadDead();
  });

  async function afterDeadAction(message) {
    $("dead-status").textContent = message;
    await Promise.allSettled([reloadDead(), loadQueues(), loadJob(), loadRecent()]);
  }

  async function replayOne(id) {
    const answer = await act("dead-error", `replay job ${id}`, "/v1/dead/replay", { ids: [id] }, () =>
      replayOne(id),
    );
    if (answer === null) return;
    await afterDeadAction(answer.replayed ? `Job ${id} replayed.` : `Job ${id} is not dead any more.`);
  }

  // What the dead-letter actions say: the verb, the count's key in the answer, the past tense.
  const DEAD_ACTIONS = {
    replay: { verb: "Replay", counted: "replayed", done: "Replayed" },
    purge: { verb: "Purge", counted: "purged", done: "Purged" },
  };

  // Replay or purge (action) the dead jobs shown or matching the filter (which): a dry run
  // first counts them, and the question says how many; nothing happens until it is confirmed.
  async function askDead(action, which) {
    dismissConfirm();
    const body = filterBody();
    let what = Object.keys(body).length ? "matching the filter" : "in every queue";
    if (which === "shown") {
      if (!shownDeadIds.length) {
        $("dead-status").textContent = "No dead jobs are shown.";
        return;
      }
      body.ids = shownDeadIds.slice();
      what = "shown";
    }
    const words = DEAD_ACTIONS[action];
    const answer = await act(
      "dead-error",
      `${action} dead jobs`,
      `/v1/dead/${action}`,
      { ...body, dry_run: true },
      () => askDead(action, which),
    );
    if (answer === null) return;
    const count = Number(answer[words.counted]) || 0;
    if (count === 0) {
      $("dead-status").textContent = `No dead jobs match: nothing to ${action}.`;
      return;
    }
    pendingDead = { action, body };
    $("dead-status").textContent = "";
    const warning = action === "purge" ? " They are deleted for good." : "";
    $("dead-question").textContent = `${words.verb} ${plural(count, "dead job")} ${what}?${warning}`;
    $("dead-yes").textContent = words.verb;
    $("dead-yes").className = action === "purge" ? "danger" : "primary";
    $("dead-confirm").hidden = false;
    $("dead-yes").focus();
  }

  function dismissConfirm() {
    pendingDead = null;
    $("dead-confirm").hidden = true;
    $("dead-question").textContent = "";
  }

  async function doDead(action, body) {
    const words = DEAD_ACTIONS[action];
    const answer = await act(
      "dead-error",
      `${action} dead jobs`,
      `/v1/dead/${action}`,
      { ...body, dry_run: false },
      () => doDead(action, body),
    );
    if (answer === null) return;
    await afterDeadAction(`${words.done} ${plural(Number(answer[words.counted]) || 0, "job")}.`);
  }

  $("replay-shown").addEventListener("click", () => askDead("replay", "shown"));
  $("replay-filtered").addEventListener("click", () => askDead("replay", "filtered"));
  $("purge-shown").addEventListener("click", () => askDead("purge", "shown"));
  $("purge-filtered").addEventListener("click", () => askDead("purge", "filtered"));
  $("dead-no").addEventListener("click", () => {
    const action = pendingDead === null ? "replay" : pendingDead.action;
    dismissConfirm();
    $("dead-status").textContent = `Nothing ${DEAD_ACTIONS[action].counted}.`;
  });
  $("dead-yes").addEventListener("click", () => {
    const pending = pendingDead;
    dismissConfirm();
    if (pending !== null) doDead(pending.action, pending.body);
  });

  // -- refreshing ----------------------------------------------------------------------------
  let timer = null;
  let ticking = false;

  async function tick() {
    timer = null;
    ticking = true;
    try {
      const work = [
        loadHealth(),
        loadQueues(),
        loadThroughput(),
        loadWorkers(),
        loadRuns(),
        loadRun(),
        loadRecent(),
        loadJob(),
      ];
      // The newest page follows new dead letters; older pages and a pending replay stay put.
      if (beforeId === null && pendingDead === null) work.push(loadDead());
      work.push(loadSchedules());
      await Promise.allSettled(work);
      $("refreshed").textContent = `updated ${new Date().toLocaleTimeString()}`;
    } finally {
      ticking = false;
      schedule();
    }
  }

  function schedule() {
    if (timer === null && !ticking && !document.hidden) timer = setTimeout(tick, REFRESH_MS);
  }

  function refreshNow() {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    if (!ticking) tick();
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      if (timer !== null) clearTimeout(timer);
      timer = null;
    } else {
      refreshNow();
    }
  });

  $("token-change").hidden = !memoryToken;
  jobFromHash();
  tick();
})();
