// Row selection of the connections list (monitoring/templates/admin/monitoring/connections.html): the "select
// all" box and the "N of M selected" counter, like the admin's own change lists.
const toggle = document.getElementById("action-toggle");
const boxes = [...document.querySelectorAll("#result_list input.action-select")];
const counter = document.querySelector("[data-selection-counter]");

function update() {
  const selected = boxes.filter((box) => box.checked);
  for (const box of boxes) box.closest("tr").classList.toggle("selected", box.checked);
  if (toggle) toggle.checked = boxes.length > 0 && selected.length === boxes.length;
  if (counter) counter.textContent = `${selected.length} of ${boxes.length} selected`;
}

toggle?.addEventListener("change", () => {
  for (const box of boxes) box.checked = toggle.checked;
  update();
});
for (const box of boxes) box.addEventListener("change", update);
update();
