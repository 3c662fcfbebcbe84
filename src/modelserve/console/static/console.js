// The console's live part: renders the summary embedded in the page, polls /ui/summary every 2 s, and
// calls the repository API for loads and unloads. Text from the server is only ever set as textContent.
"use strict";

(() => {
  const KEY = "modelserve.key"; // the admin key, kept per tab by signin.html when authentication is on
  const POLL_MS = 2000;
  const MIB = 1024 * 1024;
  const auth = document.body.dataset.auth === "on";
  const busy = new Set(); // models with a load or unload in flight: their buttons stay disabled
  let latest = null;
  let timer = null;

  const byId = (id) => document.getElementById(id);

  function headers(extra) {
    const sent = Object.assign({}, extra);
    const key = sessionStorage.getItem(KEY);
    if (auth && key) sent.Authorization = `Bearer ${key}`;
    return sent;
  }

  async function failure(response) {
    try {
      const body = await response.json();
      if (typeof body.error === "string") return body.error;
    } catch (_) {
      // not JSON: the status says what there is to say
    }
    return `${response.status} ${response.statusText}`;
  }

  function notice(id, text) {
    const element = byId(id);
    element.textContent = text;
    element.hidden = !text;
  }

  function element(tag, text, className) {
    const made = document.createElement(tag);
    if (text !== undefined) made.textContent = text;
    if (className) made.className = className;
    return made;
  }

  const total = (bytes) => Object.values(bytes).reduce((a, b) => a + b, 0);
  const mib = (bytes) => (bytes ? `${(bytes / MIB).toFixed(bytes < 10 * MIB ? 1 : 0)} MiB` : "—");
  const fixed = (value, digits) => (value === null ? "—" : value.toFixed(digits));
  const ms = (value) => (value === null ? "—" : `${value.toFixed(value < 10 ? 2 : 0)} ms`);

  function control(name, verb, label) {
    const button = element("button", label, `control ${verb}`);
    button.type = "button";
    button.dataset.model = name;
    button.dataset.action = verb;
    button.disabled = busy.has(name);
    button.addEventListener("click", () => act(name, verb));
    return button;
  }

  function modelRow(model) {
    const row = element("tr");
    row.dataset.model = model.name;
    const traffic = model.traffic;
    row.append(
      element("td", model.name, "name"),
      element("td", model.version === null ? "—" : String(model.version), "num"),
    );
    const state = element("td", model.state, `state state-${model.state.toLowerCase()}`);
    if (model.reason) state.title = model.reason;
    row.append(
      state,
      element("td", mib(total(model.memory_bytes)), "num"),
      element("td", fixed(traffic.requests_per_second, 1), "num"),
      element("td", ms(traffic.p50_ms), "num"),
      element("td", ms(traffic.p99_ms), "num"),
      element("td", fixed(traffic.batch_size, 1), "num"),
      element("td", String(traffic.cold_starts), "num"),
    );
    const actions = element("td", undefined, "actions");
    actions.append(control(model.name, "load", "Load"), control(model.name, "unload", "Unload"));
    row.append(actions);
    return row;
  }

  function renderModels(summary) {
    byId("models").tBodies[0].replaceChildren(...summary.models.map(modelRow));
    const span = summary.window_seconds;
    byId("window").textContent =
      span === null
        ? "Traffic figures appear from the next update on."
        : `Traffic over the last ${Math.round(span)} s, per model; cold starts since the server started.`;
  }

  function renderMemory(memory) {
    const parts = [];
    const limits = [];
    if (memory.soft_limit_bytes) limits.push(`soft limit ${mib(memory.soft_limit_bytes)}`);
    if (memory.hard_limit_bytes) limits.push(`hard limit ${mib(memory.hard_limit_bytes)}`);
    parts.push(element("p", `Process RSS ${mib(memory.rss_bytes)}${limits.length ? `; ${limits.join(", ")}` : ""}.`));
    if (!memory.budgets.length) parts.push(element("p", "No memory budget (MODEL_MEMORY_BUDGET_MB unset).", "muted"));
    for (const budget of memory.budgets) {
      const line = element("p", `${budget.kind} budget (${budget.setting}): ${mib(budget.held_bytes)} of ${mib(budget.limit_bytes)} held `);
      const meter = element("meter");
      meter.max = budget.limit_bytes;
      meter.value = budget.held_bytes;
      meter.high = budget.limit_bytes * 0.9;
      line.append(meter);
      parts.push(line);
    }
    const table = element("table", undefined, "occupants");
    const head = element("tr");
    head.append(element("th", "Holding memory"), element("th", "Version", "num"), element("th", "State"));
    head.append(element("th", "CPU", "num"), element("th", "GPU", "num"));
    table.append(head);
    for (const occupant of memory.occupants) {
      const row = element("tr");
      row.append(
        element("td", occupant.pinned ? `${occupant.name} (pinned)` : occupant.name, "name"),
        element("td", occupant.version === null ? "—" : String(occupant.version), "num"),
        element("td", occupant.state),
        element("td", mib(occupant.memory_bytes.CPU || 0), "num"),
        element("td", mib(occupant.memory_bytes.GPU || 0), "num"),
      );
      table.append(row);
    }
    parts.push(memory.occupants.length ? table : element("p", "No model holds memory.", "muted"));
    byId("memory").replaceChildren(...parts);
  }

  const span = (seconds) => {
    const size = Math.abs(seconds);
    if (size < 120) return `${Math.round(seconds)} s`;
    if (size < 7200) return `${(seconds / 60).toFixed(1)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  };
  const SHOWN = 10; // rows of each pre-warming table; GET /v2/prewarm and `modelserve prewarm plan` have them all

  function stepTable(caption, steps, when) {
    const table = element("table", undefined, "steps");
    table.append(element("caption", caption));
    const head = element("tr");
    for (const title of [when, "Action", "Model", "Reason"]) head.append(element("th", title));
    table.append(head);
    for (const step of steps.slice(0, SHOWN)) {
      const row = element("tr");
      const reason = step.outcome && step.outcome !== "done" ? `${step.reason} (${step.outcome})` : step.reason;
      row.append(
        element("td", span(Math.abs(step.in_seconds)), "num"),
        element("td", step.action),
        element("td", step.model, "name"),
        element("td", reason),
      );
      table.append(row);
    }
    return table;
  }

  function renderPrewarming(prewarming) {
    const parts = [];
    if (prewarming === null) {
      parts.push(element("p", "Pre-warming off (PREWARM_POLICY=none): models load on demand or when asked.", "muted"));
    } else {
      parts.push(
        element(
          "p",
          `Policy: ${prewarming.policy}. Cold starts ${prewarming.cold_starts}, lru's on the same requests ` +
            `${prewarming.lru_cold_starts} (avoided ${prewarming.cold_starts_avoided}); pre-loads unused ` +
            `${prewarming.unused_loads}.`,
        ),
      );
      if (!prewarming.planned.length) {
        parts.push(element("p", "Nothing planned yet: no load or eviction is due ahead of requests.", "muted"));
      } else {
        parts.push(stepTable("Planned, soonest first", prewarming.planned, "In"));
      }
      if (prewarming.decisions.length) parts.push(stepTable("Last decisions", prewarming.decisions, "Ago"));
      const expected = prewarming.models.filter((model) => model.in_seconds !== null && model.in_seconds >= 0);
      if (expected.length) {
        const list = element("ol", undefined, "expected");
        for (const model of expected.slice(0, SHOWN)) {
          const at = new Date(model.next_arrival * 1000).toLocaleTimeString();
          list.append(
            element("li", `${model.model} (${model.pattern}): a request expected in ${span(model.in_seconds)} (${at})`),
          );
        }
        parts.push(list);
      }
    }
    byId("prewarming").replaceChildren(...parts);
  }

  function render(summary) {
    latest = summary;
    renderModels(summary);
    renderMemory(summary.memory);
    renderPrewarming(summary.prewarming);
    byId("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  async function poll() {
    clearTimeout(timer);
    try {
      const response = await fetch("/ui/summary", { headers: headers(), cache: "no-store" });
      if (response.ok) {
        render(await response.json());
        notice("poll-error", "");
      } else {
        const why = await failure(response);
        const again = response.status === 401 || response.status === 403 ? " Sign in again at /ui/static/signin.html." : "";
        notice("poll-error", `Update failed: ${why}.${again}`);
      }
    } catch (error) {
      notice("poll-error", `Update failed: the server did not answer (${error.message}).`);
    }
    timer = setTimeout(poll, POLL_MS);
  }

  async function act(name, verb) {
    busy.add(name);
    if (latest) renderModels(latest);
    try {
      const response = await fetch(`/v2/repository/models/${encodeURIComponent(name)}/${verb}`, {
        method: "POST",
        headers: headers({ "Content-Type": "application/json" }),
        body: "{}",
      });
      notice("action-error", response.ok ? "" : `${verb} ${name} failed: ${await failure(response)}`);
    } catch (error) {
      notice("action-error", `${verb} ${name} failed: the server did not answer (${error.message}).`);
    } finally {
      busy.delete(name);
    }
    await poll();
  }

  if (auth) {
    const forget = byId("forget");
    forget.hidden = false;
    forget.addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      window.location.assign("/ui/static/signin.html");
    });
  }
  render(JSON.parse(byId("initial").textContent));
  timer = setTimeout(poll, POLL_MS);
})();
