// modeling_onebit.py (written into every export): transformers loads the folder with
// trust_remote_code and gives onebit's logits (fp32, 1e-4) and greedy tokens.
#include <torch/torch.h>

#include <cstdlib>

#include "onebit/export/export.h"
#include "onebit/io/safetensors.h"
#include "onebit/models/generate.h"
#include "onebit/models/loader.h"
#include "onebit/models/to_onebit.h"
#include "tests/data/tmpdir.h"
#include "tests/models/tiny.h"
#include "tests/references.h"
#include "tests/support.h"

using namespace onebit;

namespace {
constexpr double kTransformersTol = 1e-4;

bool have_transformers() {
  const std::string py = test::python();
  return !py.empty() && std::system((py + " -c 'import transformers, safetensors' >/dev/null 2>&1").c_str()) == 0;
}
}  // namespace

TEST_CASE("transformers loads an export through modeling_onebit.py and matches onebit", "[export][python]") {
  OB_REFERENCE_OR_SKIP(have_transformers(), "needs Python with transformers (" + test::python() + ")");
  struct Case {
    const char* name;
    models::ModelConfig cfg;
    bool post_ln;
  };
  const std::vector<Case> cases = {{"llama", test::tiny_llama_config(), true},
                                   {"llama-tied-noln", test::tiny_llama_config(true), false},
                                   {"opt", test::tiny_opt_config(), true}};
  test::TempDir tmp("export_transformers");
  for (const auto& c : cases) {
    CAPTURE(c.name);
    torch::manual_seed(5);
    auto student = models::build_model(c.cfg);
    models::StudentOptions so;
    so.post_layernorm = c.post_ln;
    models::to_onebit(*student, so);
    const std::string dir = tmp.str(c.name);
    packed::export_model(*student, dir, {});  // fp16 scales and embeddings, as shipped
    auto exported = models::load_pretrained(dir);
    exported->eval();
    const auto ids = torch::randint(3, 64, {2, 10}, torch::kLong);
    torch::Tensor ours, ours_greedy;
    {
      torch::NoGradGuard ng;
      ours = exported->forward(ids).logits;
      models::GenerateOptions go;
      go.temperature = 0;
      go.max_new_tokens = 8;
      ours_greedy = models::generate(*exported, ids.slice(0, 0, 1).slice(1, 0, 4), go);
    }
    io::write_safetensors(tmp.str("ids.safetensors"), {{"ids", ids}});
    const std::string out = tmp.str(std::string(c.name) + "-out.safetensors");
    const std::string cmd = test::python() + " " + (test::source_dir() / "tests/python/onebit_export_logits.py").string() +
                            " " + dir + " " + tmp.str("ids.safetensors") + " " + out + " >" + tmp.str("py.log") + " 2>&1";
    INFO(cmd);
    REQUIRE(std::system(cmd.c_str()) == 0);
    io::SafetensorsReader r(out);
    const auto theirs = r.load("logits");
    REQUIRE(theirs.sizes() == ours.sizes());
    CHECK((theirs - ours).abs().max().item<double>() < kTransformersTol);
    CHECK(torch::equal(r.load("greedy"), ours_greedy));
  }
}
