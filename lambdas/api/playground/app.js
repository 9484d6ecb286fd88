// The playground: a small notebook on the HTTP API (SPEC §3). No framework, no build step.
// User output is only ever inserted as text, except text/html outputs, which render in a
// sandboxed iframe (no scripts, opaque origin). The API key lives in sessionStorage only.
"use strict";

const KEY_ITEM = "lci.apiKey";
const SESSION_ITEM = "lci.sessionId";
const CHART_MIME = "application/vnd.lci.chart+json";
const POLL_MS = 300; // live output (GET /v1/executions/{id}) is at most ~1 s behind the code
const MAX_POLL_MS = 1000;
// The API lives under the page's own path: "/", or "/<stage>/" on API Gateway.
const API_BASE = new URL(location.pathname.replace(/\/?$/, "/"), location.origin);

const $ = (id) => document.getElementById(id);
const state = { sessionId: sessionStorage.getItem(SESSION_ITEM), running: null };

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// --- HTTP ------------------------------------------------------------------------------------

async function api(method, path, body) {
  const key = sessionStorage.getItem(KEY_ITEM);
  if (!key) throw new ApiError(0, "NO_KEY", "enter the API key first");
  const headers = { "x-api-key": key };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(new URL(path, API_BASE), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(response.status, error.code || `HTTP_${response.status}`,
      error.message || String(text).slice(0, 200));
  }
  return data;
}

const seg = encodeURIComponent;
const sessionPath = (suffix = "") => `v1/sessions/${seg(state.sessionId)}${suffix}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function setStatus(text, kind = "") {
  const status = $("status");
  status.textContent = text;
  status.className = kind;
}

function reportError(error, doing) {
  const code = error instanceof ApiError ? `${error.code}: ` : "";
  setStatus(`${doing} failed: ${code}${error.message}`, "error");
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// --- key and session -------------------------------------------------------------------------

async function useKey(key) {
  sessionStorage.setItem(KEY_ITEM, key);
  try {
    await refreshUsage();
    setStatus("Key accepted.", "ok");
    $("api-key").placeholder = "key in use (this tab only)";
  } catch (error) {
    reportError(error, "Checking the key");
    return;
  }
  loadPackages();
  if (state.sessionId) {
    try {
      await api("GET", sessionPath());
    } catch (error) {
      if (error.status === 404) setSession(null);
    }
  }
  showSession();
}

function setSession(sessionId) {
  state.sessionId = sessionId;
  if (sessionId) sessionStorage.setItem(SESSION_ITEM, sessionId);
  else sessionStorage.removeItem(SESSION_ITEM);
  showSession();
}

function showSession() {
  const has = Boolean(state.sessionId);
  $("session-label").textContent = has ? `session ${state.sessionId}` : "no session";
  $("delete-session").disabled = !has;
  $("download-notebook").disabled = !has;
  refreshFiles();
}

async function newSession() {
  const session = await api("POST", "v1/sessions", {});
  setSession(session.session_id);
  setStatus(`New session ${session.session_id}.`, "ok");
  return session.session_id;
}

async function deleteSession() {
  if (!state.sessionId) return;
  const gone = state.sessionId;
  await api("DELETE", sessionPath());
  setSession(null);
  for (const cell of document.querySelectorAll(".cell")) clearOutputs(cell);
  setStatus(`Deleted session ${gone}: its variables and files are gone.`);
}

// --- cells -----------------------------------------------------------------------------------

function addCell(code = "", after = null) {
  const cell = $("cell-template").content.firstElementChild.cloneNode(true);
  const input = cell.querySelector("textarea");
  input.value = code;
  input.addEventListener("keydown", (event) => onCellKey(event, cell));
  input.addEventListener("input", () => fitHeight(input));
  if (after) after.after(cell);
  else $("cells").append(cell);
  fitHeight(input);
  return cell;
}

function fitHeight(textarea) {
  textarea.rows = Math.max(2, textarea.value.split("\n").length);
}

function onCellKey(event, cell) {
  const input = event.target;
  if (event.key === "Enter" && event.shiftKey) {
    event.preventDefault();
    const next = cell.nextElementSibling || addCell("", cell);
    runCell(cell);
    next.querySelector("textarea").focus();
  } else if (event.key === "Tab" && !event.shiftKey) {
    event.preventDefault();
    input.setRangeText("    ", input.selectionStart, input.selectionEnd, "end");
  }
}

function clearOutputs(cell) {
  cell.querySelector(".outputs").replaceChildren();
  cell.rendered = [];
  cell.querySelector(".prompt").textContent = "[ ]:";
}

async function runCell(cell) {
  if (state.running) {
    setStatus("A cell is running: wait for it or interrupt it.", "error");
    return;
  }
  const code = cell.querySelector("textarea").value;
  if (!code.trim()) return;
  state.running = { cell, executionId: null };
  clearOutputs(cell);
  cell.querySelector(".prompt").textContent = "[*]:";
  cell.classList.add("running");
  try {
    if (!state.sessionId) await newSession();
    let result = await api("POST", sessionPath("/execute"), { code, wait: false });
    state.running.executionId = result.execution_id;
    $("interrupt").disabled = false;
    setStatus("Running…");
    let delay = POLL_MS;
    while (result.status === "running") {
      renderOutputs(cell, result.outputs || []);
      await sleep(delay);
      delay = Math.min(delay * 1.25, MAX_POLL_MS);
      result = await api("GET", `v1/executions/${seg(result.execution_id)}`);
    }
    renderOutputs(cell, result.outputs || []);
    finishCell(cell, result);
  } catch (error) {
    if (error.status === 404 && String(error.code).startsWith("SESSION")) setSession(null);
    reportError(error, "Running the cell");
    cell.querySelector(".prompt").textContent = "[!]:";
  } finally {
    cell.classList.remove("running");
    state.running = null;
    $("interrupt").disabled = true;
    refreshFiles();
    refreshUsage().catch(() => {});
  }
}

function finishCell(cell, result) {
  cell.querySelector(".prompt").textContent = `[${result.execution_count ?? " "}]:`;
  const seconds = ((result.duration_ms || 0) / 1000).toFixed(2);
  const notes = (result.warnings || []).join("; ");
  setStatus(`${result.status} in ${seconds} s${notes ? ` — ${notes}` : ""}`,
    result.success ? "ok" : "error");
}

async function interrupt() {
  const running = state.running;
  if (!running || !running.executionId) return;
  try {
    await api("POST", `v1/executions/${seg(running.executionId)}/interrupt`);
    setStatus("Interrupt sent: the cell stops, its variables are kept.");
  } catch (error) {
    reportError(error, "Interrupting");
  }
}

// --- outputs (nbformat v4) -------------------------------------------------------------------

// Re-render only outputs that changed since the last poll (a growing stream, a new display).
function renderOutputs(cell, outputs) {
  const area = cell.querySelector(".outputs");
  cell.rendered = cell.rendered || [];
  outputs.forEach((output, index) => {
    const signature = JSON.stringify(output);
    if (cell.rendered[index] === signature) return;
    const node = renderOutput(output);
    if (area.children[index]) area.children[index].replaceWith(node);
    else area.append(node);
    cell.rendered[index] = signature;
  });
  while (area.children.length > outputs.length) area.lastElementChild.remove();
  cell.rendered.length = outputs.length;
}

function text(value) {
  return Array.isArray(value) ? value.join("") : String(value ?? "");
}

function renderOutput(output) {
  switch (output.output_type) {
    case "stream":
      return element("pre", `output stream ${output.name}`, text(output.text));
    case "error": {
      const trace = (output.traceback || []).join("\n");
      return element("pre", "output error", trace || `${output.ename}: ${output.evalue}`);
    }
    default:
      return renderBundle(output.data || {});
  }
}

function renderBundle(data) {
  const box = element("div", "output display");
  if (data["image/png"] || data["image/jpeg"]) {
    const mime = data["image/png"] ? "image/png" : "image/jpeg";
    const image = element("img", "figure");
    image.alt = text(data["text/plain"]) || "figure";
    image.src = `data:${mime};base64,${text(data[mime]).trim()}`;
    box.append(image);
  } else if (data["image/svg+xml"]) {
    const image = element("img", "figure");
    image.alt = "figure";
    image.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(text(data["image/svg+xml"]))}`;
    box.append(image);
  } else if (data["text/html"]) {
    box.append(htmlFrame(text(data["text/html"])));
  } else if (data["text/plain"] !== undefined) {
    box.append(element("pre", "result", text(data["text/plain"])));
  } else if (data["application/json"] !== undefined) {
    box.append(element("pre", "result", JSON.stringify(data["application/json"], null, 2)));
  }
  if (data[CHART_MIME]) box.append(chartToggle(data[CHART_MIME]));
  return box;
}

// An HTML output (a DataFrame...) in a sandboxed frame: no scripts, no same origin, no forms.
function htmlFrame(html) {
  const frame = element("iframe", "html-output");
  frame.setAttribute("sandbox", "");
  frame.setAttribute("referrerpolicy", "no-referrer");
  frame.title = "HTML output";
  const rows = (html.match(/<tr/gi) || []).length;
  frame.style.height = `${Math.min(480, 48 + rows * 26)}px`;
  frame.srcdoc = html;
  return frame;
}

// --- chart data ------------------------------------------------------------------------------

function chartToggle(chart) {
  const wrapper = element("div", "chart-data");
  const button = element("button", "small", "Show chart data");
  button.type = "button";
  let tables = null;
  button.addEventListener("click", () => {
    if (!tables) {
      tables = element("div", "chart-tables");
      tables.append(...chartTables(chart));
      wrapper.append(tables);
    } else {
      tables.hidden = !tables.hidden;
    }
    button.textContent = tables.hidden ? "Show chart data" : "Hide chart data";
  });
  wrapper.append(button);
  return wrapper;
}

function chartTables(chart) {
  if (chart.type === "superchart") return (chart.elements || []).flatMap(chartTables);
  const title = [chart.type, chart.title].filter(Boolean).join(": ");
  const x = chart.x_label || "x";
  const y = chart.y_label || "y";
  const elements = chart.elements || [];
  switch (chart.type) {
    case "line":
    case "scatter":
      return elements.map((series) =>
        table(series.label ? `${title} — ${series.label}` : title, [x, y], series.points || []));
    case "bar":
      return [table(title, [x, "series", y], elements.map((b) => [b.group, b.label, b.value]))];
    case "pie":
      return [table(title, ["label", "fraction", "angle"],
        elements.map((w) => [w.label, w.fraction, w.angle]))];
    default:
      return [element("p", "muted", `${title}: no data for this kind of chart`)];
  }
}

function table(caption, header, rows) {
  const node = element("table", "data");
  node.append(element("caption", "", caption));
  const head = node.createTHead().insertRow();
  for (const name of header) head.append(element("th", "", name));
  const body = node.createTBody();
  for (const row of rows) {
    const line = body.insertRow();
    for (const value of row) line.insertCell().textContent = value ?? "";
  }
  return node;
}

// --- files, packages, usage, notebook --------------------------------------------------------

async function refreshFiles() {
  const list = $("file-list");
  if (!state.sessionId || !sessionStorage.getItem(KEY_ITEM)) {
    list.replaceChildren(element("li", "muted", "no session"));
    return;
  }
  try {
    const { files } = await api("GET", sessionPath("/files"));
    list.replaceChildren(...(files.length ? files.map(fileItem) : [element("li", "muted", "no files")]));
  } catch (error) {
    list.replaceChildren(element("li", "error", error.message));
  }
}

function fileItem(file) {
  const item = element("li");
  const link = element("a", "", file.path);
  link.href = file.download_url; // a presigned GET, straight from S3
  link.target = "_blank";
  link.rel = "noopener noreferrer";
  link.download = file.path.split("/").pop();
  item.append(link, element("span", "muted", ` ${formatBytes(file.size)}`));
  return item;
}

function formatBytes(size) {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
  return `${(size / 1024 / 1024).toFixed(1)} MiB`;
}

// Straight to S3 with the presigned POST: the policy fields first, the file last.
async function uploadFiles(files) {
  try {
    if (!state.sessionId) await newSession();
    for (const file of files) {
      setStatus(`Uploading ${file.name}…`);
      const grant = await api("POST", sessionPath("/files"), { path: file.name, size: file.size });
      const form = new FormData();
      for (const [name, value] of Object.entries(grant.upload.fields)) form.append(name, value);
      form.append("file", file);
      const response = await fetch(grant.upload.url, { method: "POST", body: form });
      if (!response.ok) {
        throw new ApiError(response.status, "UPLOAD_FAILED", (await response.text()).slice(0, 300));
      }
    }
    setStatus(`Uploaded ${files.map((f) => f.name).join(", ")}.`, "ok");
  } catch (error) {
    reportError(error, "Uploading");
  }
  refreshFiles();
}

async function loadPackages() {
  try {
    const catalogue = await api("GET", "v1/packages");
    $("package-list").replaceChildren(element("li", "muted", `Python ${catalogue.python}`),
      ...catalogue.packages.map((p) => element("li", "", `${p.name} ${p.version} · ${p.source}`)));
  } catch (error) {
    $("package-list").replaceChildren(element("li", "error", error.message));
  }
}

async function refreshUsage() {
  const usage = await api("GET", "v1/usage");
  const box = $("usage");
  box.className = "";
  box.replaceChildren(
    meter("executions", usage.executions, usage.quota.executions),
    meter("compute (s)", Math.round(usage.compute_ms / 1000), Math.round((usage.quota.compute_ms || 0) / 1000)),
    element("div", "muted", `period ${usage.period}`),
  );
}

function meter(label, value, quota) {
  const row = element("div", "meter-row");
  const bar = element("meter");
  bar.min = 0;
  bar.max = quota || 1;
  bar.value = quota ? value : 0;
  row.append(element("span", "", label), bar, element("span", "", `${value} / ${quota || "∞"}`));
  return row;
}

async function downloadNotebook() {
  if (!state.sessionId) return;
  try {
    const notebook = await api("GET", sessionPath("/notebook"));
    const blob = new Blob([JSON.stringify(notebook, null, 1)], { type: "application/x-ipynb+json" });
    const link = element("a");
    link.href = URL.createObjectURL(blob);
    link.download = `lci-${state.sessionId}.ipynb`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  } catch (error) {
    reportError(error, "Downloading the notebook");
  }
}

// --- wiring ----------------------------------------------------------------------------------

function guarded(doing, action) {
  return () => action().catch((error) => reportError(error, doing));
}

function wire() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    $("api-key").value = "";
    if (key) useKey(key);
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_ITEM);
    $("api-key").placeholder = "x-api-key";
    setStatus("Key forgotten.");
  });
  $("new-session").addEventListener("click", guarded("Creating a session", newSession));
  $("delete-session").addEventListener("click", guarded("Deleting the session", deleteSession));
  $("interrupt").addEventListener("click", interrupt);
  $("download-notebook").addEventListener("click", downloadNotebook);
  $("add-cell").addEventListener("click", () => addCell().querySelector("textarea").focus());
  $("file-input").addEventListener("change", (event) => {
    if (event.target.files.length) uploadFiles([...event.target.files]);
    event.target.value = ""; // empties the live FileList: the copy above is what uploads
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    if (event.dataTransfer.files.length) uploadFiles([...event.dataTransfer.files]);
  });
  addCell("print('hello from Lambda')");
  if (sessionStorage.getItem(KEY_ITEM)) useKey(sessionStorage.getItem(KEY_ITEM));
  else $("api-key").focus();
}

wire();
