// Enhancements only: every action works without this file.
// Copy buttons: <button class="copy" data-copy="INPUT_ID" hidden> shown only when the clipboard works.
document.querySelectorAll("button.copy[data-copy]").forEach((button) => {
  if (!navigator.clipboard) return;
  button.hidden = false;
  button.addEventListener("click", async () => {
    const field = document.getElementById(button.dataset.copy);
    try {
      await navigator.clipboard.writeText(field.value);
      button.textContent = "Copied";
    } catch {
      field.select();
    }
  });
});
// "Select all" checkboxes: <input type="checkbox" data-select-all="NAME"> toggles every box named NAME.
document.querySelectorAll("input[data-select-all]").forEach((all) => {
  all.hidden = false;
  const label = document.querySelector(`label[for="${all.id}"]`);
  if (label) label.hidden = false;
  all.addEventListener("change", () => {
    document.querySelectorAll(`input[type=checkbox][name="${all.dataset.selectAll}"]`).forEach((box) => {
      box.checked = all.checked;
    });
  });
});
