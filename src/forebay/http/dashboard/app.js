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

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    storeToken($("token-input").value.trim());
    $("token-input").value = "";
    $("token-message").textContent = "";
    $("token-panel").hidden = true;
    tokenNeeded = false;
    lastDead = null;
    refreshNow();
  });

  $("token-forget").addEventListener("click", () => {
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
    try {
      await call("POST", `/v1/queues/${encodeURIComponent(queue)}/${action}`);
      hideError("queues-error");
    } catch (err) {
      showError("queues-error", err);
    }
    await loadQueues();
  }

  function renderQueues(queues) {
    const rows = queues.map((q) => {
      const tr = el("tr");
      tr.dataset.queue = String(q.queue);
      const name = el("th", q.queue);
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
      const described = describeLimits(limits);
      const limitsCell = el("td", described || "—", described ? "limits" : "limits zero");
      limitsCell.dataset.col = "limits";
      tr.append(limitsCell);
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

  // A queue's flow limits in one line ("rate 50/s, cap 4, fair"), as `forebay stats` shows
  // them; "" for none.
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
    return parts.join(", ");
  }

  function updateQueueChoices(names) {
    if (names.join("\n") === queueNames.join("\n")) return;
    queueNames = names;
    const select = $("dead-queue");
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

  function jobLinkCell(id) {
    const cell = el("td");
    const link = el("button", id, "link");
    link.type = "button";
    link.title = "Show this job";
    link.addEventListener("click", () => showJob(id));
    cell.append(link);
    return cell;
  }

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

  $("run-seal").addEventListener("click", async () => {
    const id = shownRunId;
    if (id === null) return;
    try {
      const run = await call("POST", `/v1/runs/${encodeURIComponent(id)}/seal`);
      hideError("runs-error");
      renderRun(run);
      $("run-status").textContent = `Run ${runLabel(run)} sealed.`;
      loadRuns();
    } catch (err) {
      showError("runs-error", err);
    }
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

  // -- recent jobs ---------------------------------------------------------------------------
  const RECENT_LIMIT = 15;

  async function loadRecent() {
    const data = await load("recent-error", `/v1/jobs?limit=${RECENT_LIMIT}`);
    if (data !== null) renderRecent(Array.isArray(data.jobs) ? data.jobs : []);
  }

  function renderRecent(jobs) {
    const rows = jobs.map((job) => {
      const tr = el("tr");
      tr.dataset.jobId = String(job.id);
      const idCell = jobLinkCell(job.id);
      const state = el("td", shownState(job), "state");
      state.dataset.state = shownState(job);
      const pct = job.progress === null || job.progress === undefined ? "" : `${job.progress}%`;
      const progress = [pct, job.progress_message ?? ""].filter(Boolean).join(" ");
      tr.append(
        idCell,
        el("td", job.queue),
        state,
        el("td", job.attempt, "num"),
        el("td", progress || "—"),
        el("td", formatTime(job.updated_at)),
      );
      return tr;
    });
    $("recent-body").replaceChildren(...rows);
    $("recent-empty").hidden = rows.length > 0;
  }

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
    await loadJob();
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
  }

  // A running job whose lease expired shows as "stalled" (its stored state stays running).
  function shownState(job) {
    return job.stalled === true ? "stalled" : String(job.state);
  }

  function renderJob(job) {
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

  $("job-cancel").addEventListener("click", async () => {
    const id = shownJobId;
    if (id === null) return;
    try {
      const job = await call("POST", `/v1/jobs/${encodeURIComponent(id)}/cancel`);
      hideError("job-error");
      renderJob(job);
      $("job-status").textContent = `Job ${id} cancelled.`;
      loadQueues();
    } catch (err) {
      showError("job-error", err);
    }
  });

  // -- dead letters --------------------------------------------------------------------------
  const deadFilter = { queue: "", error_type: "" };
  let beforeId = null; // the page shown: null is the newest
  const newerPages = []; // before_id of each newer page, to go back
  let nextBeforeId = null;
  let shownDeadIds = [];
  let lastDead = null; // the last page rendered, to skip re-rendering an unchanged page
  let pendingReplay = null;

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
    dismissReplay();
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
    dismissReplay();
    reloadDead();
  });

  $("dead-newer").addEventListener("click", () => {
    if (beforeId === null) return;
    beforeId = newerPages.length ? newerPages.pop() : null;
    dismissReplay();
    reloadDead();
  });

  async function afterReplay(message) {
    $("dead-status").textContent = message;
    await Promise.allSettled([reloadDead(), loadQueues(), loadJob()]);
  }

  async function replayOne(id) {
    try {
      const answer = await call("POST", "/v1/dead/replay", { ids: [id] });
      hideError("dead-error");
      await afterReplay(
        answer.replayed ? `Job ${id} replayed.` : `Job ${id} is not dead any more.`,
      );
    } catch (err) {
      showError("dead-error", err);
    }
  }

  async function askReplay(which) {
    dismissReplay();
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
    let answer;
    try {
      answer = await call("POST", "/v1/dead/replay", { ...body, dry_run: true });
    } catch (err) {
      showError("dead-error", err);
      return;
    }
    hideError("dead-error");
    const count = Number(answer.replayed) || 0;
    if (count === 0) {
      $("dead-status").textContent = "No dead jobs match: nothing to replay.";
      return;
    }
    pendingReplay = body;
    $("dead-status").textContent = "";
    $("replay-question").textContent = `Replay ${plural(count, "dead job")} ${what}?`;
    $("replay-confirm").hidden = false;
    $("replay-yes").focus();
  }

  function dismissReplay() {
    pendingReplay = null;
    $("replay-confirm").hidden = true;
    $("replay-question").textContent = "";
  }

  $("replay-shown").addEventListener("click", () => askReplay("shown"));
  $("replay-filtered").addEventListener("click", () => askReplay("filtered"));
  $("replay-no").addEventListener("click", () => {
    dismissReplay();
    $("dead-status").textContent = "Nothing replayed.";
  });
  $("replay-yes").addEventListener("click", async () => {
    const body = pendingReplay;
    dismissReplay();
    if (body === null) return;
    try {
      const answer = await call("POST", "/v1/dead/replay", { ...body, dry_run: false });
      hideError("dead-error");
      await afterReplay(`Replayed ${plural(Number(answer.replayed) || 0, "job")}.`);
    } catch (err) {
      showError("dead-error", err);
    }
  });

  // -- refreshing ----------------------------------------------------------------------------
  let timer = null;
  let ticking = false;

  async function tick() {
    timer = null;
    ticking = true;
    try {
      const work = [loadHealth(), loadQueues(), loadRuns(), loadRun(), loadRecent(), loadJob()];
      // The newest page follows new dead letters; older pages and a pending replay stay put.
      if (beforeId === null && pendingReplay === null) work.push(loadDead());
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
  tick();
})();
