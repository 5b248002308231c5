// Import Contacts, enhanced: only the chosen origin's input shows, a file can be dropped on its
// zone, and the header check sends the file's first bytes alone (the file stays chosen in the
// page for the Import that follows). Without this script the form still works, whole.
(() => {
  const form = document.getElementById("import-form");
  if (!form) return;
  const planBytes = Number(form.dataset.planBytes);
  const plan = document.getElementById("plan");
  const file = document.getElementById("file");
  const zone = document.getElementById("drop-zone");

  const origin = () => form.querySelector("input[name=origin]:checked")?.value ?? "file";
  const showOrigin = () => {
    for (const part of form.querySelectorAll("[data-origin]")) {
      part.hidden = part.dataset.origin !== origin();
    }
  };
  showOrigin();

  // A plan shown is of the file, text and profile it was made for: any change voids it.
  form.addEventListener("change", (event) => {
    const name = event.target.name;
    if (name === "origin") showOrigin();
    if (["origin", "file", "text", "profile_id"].includes(name)) plan.replaceChildren();
  });
  form.querySelector("#text").addEventListener("input", () => plan.replaceChildren());

  zone.querySelector(".drop-hint").hidden = false;
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    if (!event.dataTransfer.files.length) return;
    file.files = event.dataTransfer.files;
    file.dispatchEvent(new Event("change", { bubbles: true }));
  });

  form.addEventListener("submit", async (event) => {
    const button = event.submitter;
    if (!button || button.name !== "check") return;
    event.preventDefault();
    const data = new FormData(form);
    data.set("check", button.value);
    const chosen = file.files[0];
    if (origin() === "file" && chosen) {
      data.set("file", chosen.slice(0, planBytes + 1), chosen.name);
    } else {
      data.delete("file");
    }
    button.disabled = true;
    try {
      const answer = await fetch(button.formAction, {
        method: "POST",
        body: data,
        headers: { "HX-Request": "true" },
      });
      const redirect = answer.headers.get("HX-Redirect");
      if (redirect) {
        window.location.assign(redirect);
        return;
      }
      if (answer.status === 403) {
        window.location.reload();
        return;
      }
      // A refusal comes as an alert, said as it arrives; a plan takes the focus.
      plan.innerHTML = await answer.text();
      plan.querySelector("h2")?.focus();
    } finally {
      button.disabled = false;
    }
  });
})();
