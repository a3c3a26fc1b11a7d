// onebit-train: OneBit distillation of a Hugging Face causal LM (method.md §3-5).
//   onebit-train --config configs/llama7b.yaml [key=value ...]
// Run directory (output_dir): config.yaml (resolved), metrics.jsonl, checkpoints/, student/.
// Several processes (torchrun or srun: onebit/dist/launch.h) train data-parallel through
// C10dSync; rank 0 alone writes the run directory and prints.
#include <signal.h>
#include <torch/torch.h>


#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>

#include "onebit/config/train_config.h"
#include "onebit/core/error.h"
#include "onebit/data/packed_blocks.h"
#include "onebit/data/training_data.h"
#include "onebit/dist/c10d_sync.h"
#include "onebit/dist/grad_sync.h"
#include "onebit/dist/launch.h"
#include "onebit/distill/checkpoint.h"
#include "onebit/distill/embedded_teacher.h"
#include "onebit/distill/train_models.h"
#include "onebit/distill/progressive.h"
#include "onebit/distill/trainer.h"
#include "onebit/eval/perplexity.h"
#include "onebit/io/safetensors.h"
#include "onebit/models/loader.h"
#include "onebit/models/to_onebit.h"
#include "onebit/plan/device_memory.h"
#include "onebit/plan/memory_plan.h"
#include "onebit/tokenizer/tokenizer.h"
#include "onebit/util/progress.h"
#include "onebit/util/stop_signals.h"
#include "train/cli.h"

namespace fs = std::filesystem;
using namespace onebit;

namespace {

// Processes: one (nullptr: NoSync), or a c10d group that every rank joins here (dist.timeout_s).
std::unique_ptr<dist::C10dSync> join_group(const config::TrainConfig& cfg, const dist::LaunchInfo& launch,
                                           torch::Device device) {
  if (launch.world_size == 1) return nullptr;
  dist::C10dOptions o;
  o.backend = cfg.dist.backend;
  o.timeout_s = static_cast<double>(cfg.dist.timeout_s);
  auto group = std::make_unique<dist::C10dSync>(launch, device, o);
  if (launch.rank == 0)
    std::cerr << "dist: " << launch.world_size << " ranks (" << launch.source << "), " << group->backend() << " at "
              << launch.master_addr << ":" << launch.master_port << std::endl;
  return group;
}

double peak_rss_mb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0;
}

double eval_ppl(models::CausalLMImpl& model, const tokenizer::Tokenizer& tok, const std::vector<std::string>& docs,
                const config::TrainConfig& cfg) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  eval::PplOptions o;
  o.protocol = eval::PplProtocol::Docs;
  o.seq_len = cfg.train.eval_seq_len;
  o.windows = cfg.train.eval_windows;
  o.progress = false;
  const double ppl = eval::perplexity(model, tok, docs, o).ppl;
  if (was_training) model.train();
  return ppl;
}

// The final table's evaluation: the whole eval text.
config::TrainConfig final_eval_cfg(config::TrainConfig cfg) {
  cfg.train.eval_windows = 0;
  return cfg;
}

// A checkpoint made with another teacher, student, data stream, world size or sharding would
// silently mix two runs.
void check_resumable(const fs::path& ckpt, const config::TrainConfig& cfg, int world_size) {
  const std::string layout = distill::CheckpointManager::layout_mismatch(ckpt, world_size, cfg.dist.sharding);
  OB_CHECK(layout.empty(), "cannot resume from ", ckpt.string(), ": ", layout);
  const auto st = distill::CheckpointManager::read_state(ckpt);
  if (st.config_yaml.empty()) return;  // written before checkpoints carried their config
  const auto diffs = config::resume_conflicts(config::parse_train_config(st.config_yaml, {}, ckpt.string()), cfg);
  if (diffs.empty()) return;
  std::string list;
  for (const auto& d : diffs) list += (list.empty() ? "" : "; ") + d;
  fail("cannot resume from ", ckpt.string(), ": it belongs to a different run (", list,
       "); use another output_dir, or train.resume=never to start over");
}

// The stop signal every rank acts on after this step: 0 while no rank received SIGTERM or
// SIGUSR1; otherwise SIGTERM if any rank received it, else SIGUSR1. One allreduce per step
// (two on the step that stops), so a signal to one rank stops all of them at the same step.
int agreed_stop(dist::GradSync& sync, int local) {
  if (!sync.any(local != 0)) return 0;
  return sync.any(local == SIGTERM) ? SIGTERM : SIGUSR1;
}

// The memory planner's settings from the command line (docs/training.md, "Will it fit?").
struct PlanFlags {
  bool dry_run = false, force = false;
  std::string json_out, gpu_memory;
  int world_size = 0;  // 0: from the launcher's environment
};

// student.progressive_steps against the planned run length, before anything is loaded (the
// trainer checks the exact length again; self-sampled data may give fewer steps than planned).
void check_progressive(const config::TrainConfig& cfg, const plan::MemoryPlan& p) {
  if (cfg.student.progressive_steps > 0 && p.steps > 0)
    distill::ProgressiveReplacement::check_run_length(p.model.num_hidden_layers, cfg.student.progressive_steps,
                                                      p.steps);
}

// --dry-run: the plan of the resolved config, without loading anything but config.json.
// Exit status 0 when it fits (or no budget is known), 3 when it does not.
int dry_run(config::TrainConfig cfg, const PlanFlags& f) {
  const int64_t world = f.world_size > 0 ? f.world_size : dist::detect_launch().world_size;
  cfg.optim.grad_accum = config::grad_accum_for(cfg, static_cast<int>(world));  // checks train.global_batch
  const bool cuda = cfg.model.device != "cpu";
  auto o = plan::run_options(cfg, world, cuda);
  if (!f.gpu_memory.empty()) o.budget_bytes = plan::parse_bytes(f.gpu_memory);
  else if (cuda && torch::cuda::is_available()) o.budget_bytes = plan::device_total_bytes(torch::Device("cuda:0"));
  const auto p = plan::plan_memory(cfg, plan::teacher_model_config(cfg), o);
  check_progressive(cfg, p);
  std::cout << plan::format_plan(p);
  if (!f.json_out.empty()) io::write_file_atomic(f.json_out, plan::plan_json(p));
  return p.fits ? 0 : 3;
}

// A real run's plan on its device; stops before loading when it does not fit (unless --force).
plan::MemoryPlan check_plan(const config::TrainConfig& cfg, const PlanFlags& f, const dist::LaunchInfo& launch,
                            torch::Device device) {
  auto o = plan::run_options(cfg, launch.world_size, device.is_cuda());
  o.budget_bytes = f.gpu_memory.empty() ? plan::device_total_bytes(device) : plan::parse_bytes(f.gpu_memory);
  auto p = plan::plan_memory(cfg, plan::teacher_model_config(cfg), o);
  check_progressive(cfg, p);
  if (!p.fits && !f.force) {
    std::string tries;
    for (const auto& s : p.suggestions) tries += "; " + s;
    fail("plan: this run needs ", plan::format_bytes(p.total_bytes), " per device (peak ",
         plan::format_bytes(p.peak_bytes), " + margin ", plan::format_bytes(p.margin_bytes), ") but ",
         device.str(), " has ", plan::format_bytes(o.budget_bytes), tries,
         "; see onebit-train --dry-run for the components, --force to run anyway");
  }
  return p;
}

int run(const std::string& config_path, const std::vector<std::string>& overrides, bool print_only,
        const PlanFlags& plan_flags) {
  config::TrainConfig cfg = config::load_train_config(config_path, overrides);
  if (print_only) {
    std::cout << cfg.to_yaml();
    return 0;
  }
  if (plan_flags.dry_run) return dry_run(cfg, plan_flags);
  const int64_t baseline_rss = plan::device_current_bytes(torch::kCPU);  // before any model exists
  // Processes: one (NoSync), or a c10d group that every rank joins here (dist.timeout_s).
  const dist::LaunchInfo launch = dist::detect_launch();
  const bool lead = launch.rank == 0;  // rank 0 writes the run folder and prints
  cfg.optim.grad_accum = config::grad_accum_for(cfg, launch.world_size);  // checks train.global_batch
  const torch::Device device = dist::device_for(cfg.model.device, launch);
  dist::NoSync no_sync;
  const std::unique_ptr<dist::C10dSync> group = join_group(cfg, launch, device);
  dist::GradSync& sync = group ? static_cast<dist::GradSync&>(*group) : no_sync;
  // Rank 0 writes a shared cache (the embedded teacher, a checkpoint) while the others wait for it.
  auto rank0_first = [&](const std::string& what, const std::function<void()>& fn) {
    if (group) group->rank0_first(what, fn);
    else fn();
  };
  // Vet a resume before any expensive work: the checkpoint must belong to this run.
  const fs::path out = cfg.output_dir;
  const std::string run_yaml = cfg.to_yaml();  // as the user wrote it (before 'embedded' is resolved)
  distill::CheckpointManager ckpts(out / "checkpoints", cfg.train.keep_last);
  std::optional<fs::path> resume_from;
  if (cfg.train.resume == "auto") resume_from = ckpts.latest_valid();
  else if (cfg.train.resume != "never") resume_from = fs::path(cfg.train.resume);
  if (resume_from) check_resumable(*resume_from, cfg, launch.world_size);

  if (cfg.model.teacher == "embedded") {
    // Quickstart: pretrain (or reuse) the tiny synthetic-language teacher, evaluate on its held-out text.
    distill::EmbeddedTeacher et;
    rank0_first("pretraining the embedded teacher",
                [&] { et = distill::ensure_embedded_teacher(cfg.embedded, cfg.output_dir, device, lead); });
    if (et.reused && lead) std::cerr << "embedded teacher: reusing " << et.dir << std::endl;
    cfg.model.teacher = et.dir;
    if (cfg.train.eval_text.empty()) cfg.train.eval_text = et.heldout_text;
  }
  const fs::path teacher_dir = cfg.model.teacher;
  OB_CHECK(fs::is_directory(teacher_dir) && fs::exists(teacher_dir / "config.json"), "model.teacher: '",
           teacher_dir.string(), "' is not a Hugging Face model folder (no config.json)");
  const plan::MemoryPlan mem_plan = check_plan(cfg, plan_flags, launch, device);

  fs::create_directories(out);
  if (lead) io::write_file_atomic((out / "config.yaml").string(), cfg.to_yaml());
  torch::manual_seed(cfg.train.seed);
  if (cfg.train.deterministic) at::globalContext().setDeterministicAlgorithms(true, false);

  // Teacher (frozen) and student (OneBit; latent W in student.latent_dtype, train.precision sets the compute).
  distill::TrainModels tm = distill::load_train_models(cfg, device);
  models::CausalLM teacher = tm.teacher, student = tm.student;
  const auto& replaced = tm.replaced;
  if (lead) std::cerr << "student: " << replaced.size() << " linears replaced by OneBitLinear" << std::endl;

  // Data: every rank the same blocks (sampled by all ranks together), each its slice of every batch.
  data::SampleRanks ranks{launch.rank, launch.world_size, nullptr};
  if (group) ranks.all_gather = [&](const torch::Tensor& t) { return group->all_gather_cpu(t); };
  const auto blocks = data::training_blocks(cfg, *teacher, teacher_dir.string(), lead, ranks);
  data::BatchIterator batches(blocks, data::batch_options(cfg, launch.rank, launch.world_size));
  OB_CHECK(batches.batches_per_epoch() > 0, "data: ", blocks->num_blocks(), " blocks of ", cfg.data.seq_len,
           " tokens are fewer than one batch of data.batch_size=", cfg.data.batch_size);
  const int64_t total = cfg.train.max_steps > 0
                            ? cfg.train.max_steps
                            : std::max<int64_t>(1, cfg.train.epochs * batches.batches_per_epoch() / cfg.optim.grad_accum);

  distill::Trainer trainer(cfg, teacher, student, [&] { return batches.next(); }, sync, total);
  if (resume_from) {
    const auto st = ckpts.load(*resume_from, trainer.param_sync());
    trainer.load_state(st);  // the step and the fp16 loss scaler
    batches.seek({st.counters.at("data_epoch"), st.counters.at("data_index")});
    if (lead) std::cerr << "resumed from " << resume_from->string() << " at step " << st.step << std::endl;
  }
  if (group) {
    // Every rank must continue from the same checkpoint (output_dir on a shared filesystem).
    const double s = static_cast<double>(trainer.steps_done());
    const double m = sync.mean(s), m2 = sync.mean(s * s);
    OB_CHECK(m2 - m * m == 0, "dist: the ranks resumed from different steps (rank ", launch.rank, " from step ",
             trainer.steps_done(), ", mean ", m, "); output_dir must be one folder that all ranks share");
    // Start from rank 0's values, as DDP does (a GPU init need not be bitwise reproducible).
    // dist.sharding=full replicates no trainable value: each shard has its one owner.
    std::vector<torch::Tensor> tensors;
    for (const auto& [name, t] : trainer.trainable()) tensors.push_back(t);
    if (cfg.dist.sharding != "full") group->broadcast(tensors, 0);
  }
  // Every rank writes its shard; rank 0 commits once all are complete (no rank races past it).
  int64_t saved_step = -1;
  fs::path saved_path;
  auto save = [&] {
    distill::TrainState st;
    trainer.save_state(st);
    st.counters["data_epoch"] = batches.position().epoch;
    st.counters["data_index"] = batches.position().index;
    st.config_yaml = run_yaml;
    saved_path = ckpts.save(trainer.param_sync(), st);
    saved_step = st.step;
  };

  std::unique_ptr<tokenizer::Tokenizer> tok;
  std::vector<std::string> eval_docs;
  if (!cfg.train.eval_text.empty()) {
    tok = tokenizer::load_tokenizer(teacher_dir.string());
    eval_docs = eval::read_documents(cfg.train.eval_text, eval::PplProtocol::Docs);
  }

  std::ofstream metrics;
  if (lead) metrics.open(out / "metrics.jsonl", std::ios::app);
  std::optional<util::ProgressBar> bar;
  if (lead) bar.emplace("distill", total, "steps");
  const auto t0 = std::chrono::steady_clock::now();
  int64_t tokens = 0;
  bool warned_plan = false;
  // From here on SIGTERM/SIGUSR1 end the run after the current step with a checkpoint
  // (docs/RELIABILITY.md, "Preemption"); before, they end the process as usual (nothing to save).
  std::optional<util::StopSignals> stop_signals(std::in_place);
  while (trainer.steps_done() < total) {
    const auto st = trainer.step();
    tokens += st.tokens * launch.world_size;  // all ranks: every rank's batch has the same shape
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    nlohmann::json m = {{"step", st.step},     {"loss", st.loss}, {"kl", st.kl},       {"hidden", st.hidden},
                        {"ce", st.ce},         {"lr", st.lr},     {"grad_norm", st.grad_norm},
                        {"skipped", st.skipped}, {"tokens_per_s", tokens / std::max(secs, 1e-9)},
                        {"peak_rss_mb", peak_rss_mb()}};
    // Measured peak of this device (CPU: resident memory above the process before loading)
    // next to the plan's peak; one warning when they differ by more than 15%.
    const int64_t measured = plan::device_peak_bytes(device) - (device.is_cuda() ? 0 : baseline_rss);
    m["peak_mb"] = double(measured) / (1 << 20);
    m["planned_peak_mb"] = double(mem_plan.peak_bytes) / (1 << 20);
    const double off = double(measured - mem_plan.peak_bytes);
    if (lead && !warned_plan && std::abs(off) > 0.15 * double(mem_plan.peak_bytes) && std::abs(off) > (64 << 20)) {
      warned_plan = true;
      std::cerr << "warning: measured peak " << plan::format_bytes(measured) << " differs from the planned "
                << plan::format_bytes(mem_plan.peak_bytes) << " by " << int(100 * off / double(mem_plan.peak_bytes))
                << "%" << std::endl;
    }
    if (trainer.loss_scaler()) {
      m["loss_scale"] = st.loss_scale;
      m["overflow"] = st.overflow;
    }
    const bool eval_now = tok && cfg.train.eval_every > 0 && st.step % cfg.train.eval_every == 0 && !st.skipped;
    // Every rank evaluates (same result): the others would only wait, and stay within the timeout.
    if (eval_now) m["eval_ppl"] = eval_ppl(*student, *tok, eval_docs, cfg);
    if (lead) {
      if (st.step % cfg.train.log_every == 0 || eval_now || st.skipped) metrics << m.dump() << "\n" << std::flush;
      char extra[112];
      const int n = std::snprintf(extra, sizeof extra, "loss %.4f kl %.3f hid %.4f", st.loss, st.kl, st.hidden);
      if (trainer.loss_scaler() && n > 0 && n < static_cast<int>(sizeof extra))
        std::snprintf(extra + n, sizeof extra - n, " scale %g", trainer.loss_scaler()->scale());
      bar->update(trainer.steps_done(), extra);
    }
    if (cfg.train.save_every > 0 && !st.skipped && st.step % cfg.train.save_every == 0) save();
    if (const int sig = agreed_stop(sync, stop_signals->received())) {
      if (saved_step != trainer.steps_done()) save();
      if (bar) bar->finish();
      if (lead)
        std::cerr << "onebit-train: " << util::signal_name(sig) << ": stopped after step " << trainer.steps_done()
                  << " of " << total << ", checkpoint " << saved_path.string() << ", exit "
                  << util::exit_code_for(sig) << "; the same command resumes" << std::endl;
      // No rank may leave (rank 0 takes the store with it) before all saw the checkpoint complete.
      if (group) group->barrier("checkpoint after " + std::string(util::signal_name(sig)));
      return util::exit_code_for(sig);
    }
  }
  stop_signals.reset();  // the end of the run (student, final table) is not checkpointed: signals end it
  if (bar) bar->finish();
  if (saved_step != trainer.steps_done()) save();  // the last periodic checkpoint is not rewritten
  const int64_t steps_done = trainer.steps_done();
  // Frees the gradients, the optimizer state and the communication buffers before the student
  // is written and evaluated (dist.sharding=full keeps its layers sharded: every rank takes part).
  trainer.finish();
  const fs::path student_dir = out / "student";
  trainer.save_student(student_dir.string(), lead);
  if (lead) {
    tokenizer::copy_tokenizer_files(teacher_dir.string(), student_dir.string());
    std::cerr << "student saved to " << student_dir.string() << std::endl;
  }
  // Every rank evaluates the student and the teacher (dist.sharding=full, dist.shard_teacher:
  // their forwards gather the layers together); the naive baseline is rank 0's alone.
  const double s_ppl = tok ? eval_ppl(*student, *tok, eval_docs, final_eval_cfg(cfg)) : 0;
  const double t_ppl = tok ? eval_ppl(*teacher, *tok, eval_docs, final_eval_cfg(cfg)) : 0;
  // No rank may leave (rank 0 takes the store with it) before all saw the checkpoint complete.
  if (group) group->barrier("end of training");
  if (!lead) return 0;  // the final table is rank 0's

  if (tok) {
    // Final table on the whole eval text: teacher, OneBit student, naive 1-bit baseline.
    const config::TrainConfig full = final_eval_cfg(cfg);
    auto naive = models::load_pretrained(teacher_dir.string(), models::LoadOptions{device, torch::kFloat32});
    models::naive_sign_quantize(*naive);
    const double n_ppl = eval_ppl(*naive, *tok, eval_docs, full);
    metrics << nlohmann::json{{"step", steps_done}, {"final_ppl", {{"teacher", t_ppl}, {"student", s_ppl},
                                                                            {"naive_sign", n_ppl}}}}.dump()
            << "\n";
    std::printf("perplexity on %s (docs protocol, seq_len %lld)\n", cfg.train.eval_text.c_str(),
                static_cast<long long>(cfg.train.eval_seq_len));
    std::printf("  %-26s %10.3f\n  %-26s %10.3f\n  %-26s %10.3f\n", "teacher (full precision)", t_ppl,
                "OneBit student", s_ppl, "naive 1-bit (sign)", n_ppl);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return guarded_main("onebit-train", [&] {
    CLI::App app{"onebit-train: OneBit distillation of a causal LM (keys: docs/configuration.md)"};
    std::string config_path;
    std::vector<std::string> overrides;
    bool print_config = false;
    app.add_option("--config", config_path, "YAML recipe (configs/*.yaml)")->required()->check(CLI::ExistingFile);
    app.add_option("overrides", overrides, "key=value overrides, e.g. optim.lr=1e-4 kd.alpha=0");
    app.add_flag("--print-config", print_config, "print the resolved configuration and exit");
    PlanFlags pf;
    app.add_flag("--dry-run", pf.dry_run,
                 "print the memory plan (shapes, parameters, steps, memory per GPU) without loading weights; "
                 "exit 3 when it does not fit");
    app.add_option("--json", pf.json_out, "--dry-run: also write the plan as JSON to this file");
    app.add_option("--gpu-memory", pf.gpu_memory,
                   "memory of one device, e.g. 80GiB or 141GB (default: the device's own memory)");
    app.add_flag("--force", pf.force, "train even when the plan does not fit the device");
    app.add_option("--world-size", pf.world_size, "--dry-run: ranks to plan for (default: the launcher's)")
        ->check(CLI::PositiveNumber);
    ONEBIT_PARSE("onebit-train", app, argc, argv);
    return run(config_path, overrides, print_config, pf);
  });
}
