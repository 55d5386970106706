// Runs a fuzz target over every file in its corpus directory: the corpus becomes a regression test
// in builds without libFuzzer. Usage: <target>_replay [DIR...]; default $FUZZ_CORPUS_DIR/<target>.
#include <dirent.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
extern const char* const kFuzzTargetName;

namespace {

int runDir(const std::string& dir, int& count) {
  DIR* d = opendir(dir.c_str());
  if (!d) {
    std::fprintf(stderr, "cannot open corpus directory %s\n", dir.c_str());
    return 1;
  }
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") {
      continue;
    }
    std::ifstream in(dir + "/" + name, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    ++count;
  }
  closedir(d);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> dirs(argv + 1, argv + argc);
  if (dirs.empty()) {
    const char* base = std::getenv("FUZZ_CORPUS_DIR");
    dirs.push_back(std::string(base ? base : "tests/fuzz/corpus") + "/" + kFuzzTargetName);
  }
  int count = 0;
  for (const auto& dir : dirs) {
    if (runDir(dir, count) != 0) {
      return 1;
    }
  }
  if (count == 0) {
    std::fprintf(stderr, "%s: empty corpus\n", kFuzzTargetName);
    return 1;
  }
  std::printf("%s: %d corpus inputs ran without a crash\n", kFuzzTargetName, count);
  return 0;
}
