/* Self-check quizzes (book/_ext/llmbook_quiz.py): no kernel, no network. */
(function () {
  "use strict";

  function chosen(q) {
    return Array.prototype.filter.call(
      q.querySelectorAll("input"), function (i) { return i.checked; });
  }

  function reset(q) {
    q.querySelectorAll(".llmbook-quiz-opt").forEach(function (opt) {
      opt.classList.remove("llmbook-quiz-right", "llmbook-quiz-wrong");
      opt.querySelector('[data-role="explanation"]').hidden = true;
      opt.querySelector('[data-role="verdict"]').textContent = "";
    });
    q.removeAttribute("data-result");
  }

  function show(opt) {
    var right = opt.getAttribute("data-correct") === "1";
    opt.classList.add(right ? "llmbook-quiz-right" : "llmbook-quiz-wrong");
    opt.querySelector('[data-role="verdict"]').textContent =
      right ? "Right: " : "Wrong: ";
    opt.querySelector('[data-role="explanation"]').hidden = false;
  }

  function check(q) {
    var feedback = q.querySelector('[data-role="feedback"]');
    var picked = chosen(q);
    reset(q);
    if (!picked.length) {
      feedback.textContent = "Choose an answer first.";
      q.setAttribute("data-result", "none");
      return;
    }
    var opts = Array.prototype.slice.call(q.querySelectorAll(".llmbook-quiz-opt"));
    var ok = opts.every(function (opt) {
      var want = opt.getAttribute("data-correct") === "1";
      return want === opt.querySelector("input").checked;
    });
    picked.forEach(function (input) { show(input.closest(".llmbook-quiz-opt")); });
    if (ok) {
      opts.forEach(show); /* a right answer earns every option's explanation */
      feedback.textContent = "Correct.";
    } else {
      feedback.textContent = q.getAttribute("data-multiple") === "1"
        ? "Not quite: check each option again, or show the answer."
        : "Not quite: read why, then try again or show the answer.";
    }
    q.setAttribute("data-result", ok ? "right" : "wrong");
  }

  function reveal(q) {
    reset(q);
    q.querySelectorAll(".llmbook-quiz-opt").forEach(show);
    q.querySelector('[data-role="feedback"]').textContent =
      "The right answer is marked; every option is explained.";
    q.setAttribute("data-result", "revealed");
  }

  function init() {
    document.querySelectorAll(".llmbook-quiz-q").forEach(function (q) {
      if (q.getAttribute("data-ready") === "1") return;
      q.querySelector('[data-role="check"]').addEventListener(
        "click", function () { check(q); });
      q.querySelector('[data-role="reveal"]').addEventListener(
        "click", function () { reveal(q); });
      q.querySelectorAll("input").forEach(function (input) {
        input.addEventListener("change", function () {
          if (q.getAttribute("data-result") === "revealed") return;
          reset(q);
          q.querySelector('[data-role="feedback"]').textContent = "";
        });
      });
      q.setAttribute("data-ready", "1");
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
