// onebit-teacher: pretrain the embedded (synthetic-language) teacher of a config into a folder,
// so that several runs share one teacher (onebit-sweep) instead of each pretraining its own.
//   onebit-teacher --config configs/quickstart.yaml --out DIR [embedded.key=value ...]
// Writes DIR/teacher (a Hugging Face folder + embedded.json) and DIR/heldout.txt; a complete
// teacher made with the same embedded.* settings is reused (distill/embedded_teacher.h).
#include <torch/torch.h>

#include <iostream>

#include "onebit/config/train_config.h"
#include "onebit/core/error.h"
#include "onebit/distill/embedded_teacher.h"
#include "train/cli.h"

using namespace onebit;

int main(int argc, char** argv) {
  return guarded_main("onebit-teacher", [&] {
    CLI::App app{
        "onebit-teacher: pretrain the embedded quickstart teacher (the config's embedded.* keys) into\n"
        "OUT/teacher with OUT/heldout.txt, on the CPU (deterministic). Use it with model.teacher=OUT/teacher\n"
        "and train.eval_text=OUT/heldout.txt. A complete teacher with the same settings is reused."};
    std::string config_path, out_dir;
    std::vector<std::string> overrides;
    bool quiet = false;
    app.add_option("--config", config_path, "YAML recipe; only its embedded.* keys are used")
        ->required()
        ->check(CLI::ExistingFile);
    app.add_option("--out", out_dir, "output folder (teacher/ and heldout.txt inside)")->required();
    app.add_option("overrides", overrides, "key=value overrides, e.g. embedded.train_tokens=200000");
    app.add_flag("--quiet", quiet, "no progress bar");
    ONEBIT_PARSE("onebit-teacher", app, argc, argv);

    const config::TrainConfig cfg = config::load_train_config(config_path, overrides);
    OB_CHECK(cfg.model.teacher == "embedded", config_path, ": model.teacher is '", cfg.model.teacher,
             "', not 'embedded': there is no teacher to pretrain");
    const auto t = distill::ensure_embedded_teacher(cfg.embedded, out_dir, torch::kCPU, !quiet);
    if (t.reused)
      std::cerr << "embedded teacher: reusing " << t.dir << std::endl;
    else
      std::cerr << "embedded teacher: " << t.steps << " steps, loss " << t.first_loss << " -> " << t.last_loss
                << " nats; saved to " << t.dir << std::endl;
    std::cout << t.dir << "\n" << t.heldout_text << std::endl;
    return 0;
  });
}
