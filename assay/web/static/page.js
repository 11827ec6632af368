// The status page: fetch the live part with the operator's token and swap it in.
"use strict";
(function () {
  const live = document.getElementById("live");
  const state = document.getElementById("state");
  const message = document.getElementById("message");
  const login = document.getElementById("login");
  const replay = document.getElementById("replay");
  const interval = 1000;
  let timer = null;

  function token() { return sessionStorage.getItem("assay-token"); }

  function selected() {
    return Array.from(live.querySelectorAll("tr.held input:checked"))
      .map((box) => box.closest("tr").dataset.id);
  }

  async function refresh() {
    if (!token()) { login.hidden = false; return; }
    const keep = new Set(selected());
    try {
      const answer = await fetch("/v1/status.html", {
        headers: { Authorization: "Bearer " + token() }, cache: "no-store" });
      if (answer.status === 401 || answer.status === 403) {
        state.textContent = "token refused (" + answer.status + ")";
        sessionStorage.removeItem("assay-token");
        login.hidden = false;
        return;
      }
      live.innerHTML = await answer.text();
      for (const row of live.querySelectorAll("tr.held")) {
        if (keep.has(row.dataset.id)) row.querySelector("input").checked = true;
      }
      state.textContent = "live";
      replay.disabled = selected().length === 0;
    } catch (err) {
      state.textContent = "unreachable, retrying";
    }
    timer = setTimeout(refresh, interval);
  }

  login.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("assay-token", document.getElementById("token").value);
    login.hidden = true;
    clearTimeout(timer);
    refresh();
  });
  document.getElementById("forget").addEventListener("click", () => {
    sessionStorage.removeItem("assay-token");
    clearTimeout(timer);
    live.innerHTML = "";
    login.hidden = false;
  });
  live.addEventListener("change", () => { replay.disabled = selected().length === 0; });
  replay.addEventListener("click", async () => {
    const rows = selected().map((id) => {
      const [division, window, table, row] = id.split("|");
      return { division, window, table, row: Number(row) };
    });
    const answer = await fetch("/v1/quarantine/replay", {
      method: "POST", body: JSON.stringify({ rows }),
      headers: { Authorization: "Bearer " + token(), "Content-Type": "application/json" } });
    const body = await answer.json();
    message.textContent = answer.ok ? "replayed " + body.replayed + " rows"
      : "replay refused: " + body.detail;
    for (const box of live.querySelectorAll("tr.held input:checked")) box.checked = false;
    replay.disabled = true;
  });
  refresh();
})();
