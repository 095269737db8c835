// Host-side check of the plugin library without TensorRT or a GPU: load it the way TensorRT does
// (dlopen + getCreators), then exercise creator identity and field names, attribute parsing (INT32
// and INT64 ints, bad values refused), serialization round trip, format combinations, output types,
// workspace size, and enqueue itself on the host-test build (libstylert_plugins_host.so: the same
// glue over the CPU reference kernels), whose output must equal a direct call of the C ABI with the
// arguments the node implies. Exit status 0 when every check holds.
//     plugin_check build/libstylert_plugins_host.so
#include "NvInferRuntime.h"
#include "stylert_kernels.h"
#include "kernels_common.h"

#include <dlfcn.h>

#include <cmath>
#include <random>
#include <vector>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

using namespace nvinfer1;

namespace {

int gFailures = 0;

void check(bool ok, std::string const& what) {
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
    if (!ok) ++gFailures;
}

IPluginCreatorV3One* find(IPluginCreatorInterface* const* creators, int32_t n, char const* name) {
    for (int32_t i = 0; i < n; ++i) {
        auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (std::string(c->getPluginName()) == name) return c;
    }
    return nullptr;
}

DynamicPluginTensorDesc desc(DataType type, Dims dims, TensorFormat format = TensorFormat::kLINEAR) {
    DynamicPluginTensorDesc d{};
    d.desc.type = type;
    d.desc.format = format;
    d.desc.dims = dims;
    d.min = d.max = d.opt = dims;
    return d;
}

Dims dims(std::initializer_list<int64_t> values) {
    Dims d{};
    d.nbDims = static_cast<int32_t>(values.size());
    int i = 0;
    for (int64_t v : values) d.d[i++] = v;
    return d;
}

std::vector<float> randomVector(size_t n, unsigned seed) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> dist;
    std::vector<float> v(n);
    for (float& x : v) x = dist(gen);
    return v;
}

PluginTensorDesc tensor(Dims d) {
    PluginTensorDesc t{};
    t.dims = d;
    t.type = DataType::kFLOAT;
    t.format = TensorFormat::kLINEAR;
    return t;
}

std::vector<uint16_t> toHalf(std::vector<float> const& v) {
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = stylert_float_to_half(v[i]);
    return h;
}

std::vector<float> widened(std::vector<uint16_t> const& h) {
    std::vector<float> v(h.size());
    stylert_half_to_float_cpu(h.data(), v.data(), h.size(), nullptr);
    return v;
}

// enqueue through the plugin == the C ABI called with the node's arguments spelled out. half: an
// fp16 export's node (x, y, weight, bias, noise, filter fp16; styles fp32), whose parameters the
// plugin widens to fp32 itself; the C ABI gets them widened here.
void checkConv(IPluginCreatorV3One* conv, int up, int k, int pad, int demod, char const* act, bool noise,
               bool half = false) {
    int const B = 2, I = 5, O = 4, H = 6, f = up == 2 ? 4 : 1, Ho = H * up;
    float clamp = 256.0f;
    int32_t fieldUp = up, fieldPad = pad, fieldDemod = demod;
    PluginField fields[] = {PluginField("up", &fieldUp, PluginFieldType::kINT32, 1),
                            PluginField("padding", &fieldPad, PluginFieldType::kINT32, 1),
                            PluginField("demodulate", &fieldDemod, PluginFieldType::kINT32, 1),
                            PluginField("activation", act, PluginFieldType::kCHAR, static_cast<int32_t>(strlen(act) + 1)),
                            PluginField("clamp", &clamp, PluginFieldType::kFLOAT32, 1)};
    PluginFieldCollection fc{5, fields};
    IPluginV3* p = conv->createPlugin("conv", &fc, TensorRTPhase::kRUNTIME);
    auto* rt = static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    auto* bd = static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD));
    std::vector<float> x = randomVector(B * I * H * H, 1), s = randomVector(B * I, 2), w = randomVector(O * I * k * k, 3);
    std::vector<float> bias = randomVector(O, 4), nz = noise ? randomVector(Ho * Ho, 5) : std::vector<float>{0.0f};
    std::vector<float> filt(f * f, 1.0f / (f * f));
    for (float& v : s) v += 1.0f;
    std::vector<uint16_t> hx = toHalf(x), hw = toHalf(w), hb = toHalf(bias), hn = toHalf(nz), hf = toHalf(filt);
    DataType t = half ? DataType::kHALF : DataType::kFLOAT;
    PluginTensorDesc in[6] = {tensor(dims({B, I, H, H})), tensor(dims({B, I})), tensor(dims({O, I, k, k})),
                              tensor(dims({O})), tensor(noise ? dims({Ho, Ho}) : dims({1, 1})),
                              tensor(f > 1 ? dims({f, f}) : dims({1, 1}))};
    PluginTensorDesc out[1] = {tensor(dims({B, O, Ho, Ho}))};
    for (int i : {0, 2, 3, 4, 5}) in[i].type = t;
    out[0].type = t;
    DynamicPluginTensorDesc din[6], dout[1];
    for (int i = 0; i < 6; ++i) din[i] = desc(in[i].type, in[i].dims);
    dout[0] = desc(t, out[0].dims);
    std::vector<char> ws(bd->getWorkspaceSize(din, 6, dout, 1)), ws2(ws.size());
    size_t n = static_cast<size_t>(B) * O * Ho * Ho, bytes = n * (half ? 2 : 4);
    std::vector<char> got(bytes, 0x7f), want(bytes, 0x7f);
    void const* inputs[6] = {x.data(), s.data(), w.data(), bias.data(), nz.data(), filt.data()};
    if (half) {
        inputs[0] = hx.data(), inputs[2] = hw.data(), inputs[3] = hb.data(), inputs[4] = hn.data(), inputs[5] = hf.data();
        w = widened(hw), bias = widened(hb), nz = widened(hn), filt = widened(hf);
    }
    void* outputs[1] = {got.data()};
    int status = rt->enqueue(in, out, inputs, outputs, ws.data(), nullptr);
    int ref = stylert_modulated_conv2d_cpu(half ? static_cast<void const*>(hx.data()) : x.data(), s.data(), w.data(),
                                           bias.data(), noise ? nz.data() : nullptr, up == 2 ? filt.data() : nullptr,
                                           want.data(), ws2.data(), B, I, O, H, H, k, up, pad, f, demod,
                                           std::string(act) == "lrelu", 1.41421356237f, clamp,
                                           half ? STYLERT_F16 : STYLERT_F32, nullptr);
    bool same = status == 0 && ref == 0 && got == want;
    check(same, "ModulatedConv2d enqueue up=" + std::to_string(up) + " k=" + std::to_string(k) + " pad=" +
                    std::to_string(pad) + " demodulate=" + std::to_string(demod) + " " + act +
                    (noise ? " with noise" : " without noise ([1,1] placeholder)") + (half ? " fp16 (weights too)" : "") +
                    " == the C ABI call");
    delete p;
}

void checkEnqueue(IPluginCreatorV3One* conv, IPluginCreatorV3One* blend) {
    checkConv(conv, 1, 3, 1, 1, "lrelu", true);
    checkConv(conv, 2, 3, 1, 1, "lrelu", true);
    checkConv(conv, 1, 1, 0, 0, "linear", false);  // toRGB
    checkConv(conv, 1, 3, 1, 1, "lrelu", true, true);
    checkConv(conv, 2, 3, 1, 1, "lrelu", true, true);
    IPluginV3* p = blend->createPlugin("blend", nullptr, TensorRTPhase::kRUNTIME);
    auto* rt = static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    int const B = 2, C = 3, P = 5 * 5;
    std::vector<float> fs = randomVector(B * C * P, 6), fi = randomVector(B * C * P, 7), ms(B * P, 0.3f), mc(B * C, 0.6f);
    std::vector<float> got(B * C * P, NAN), want(B * C * P, NAN);
    PluginTensorDesc in[4] = {tensor(dims({B, C, 5, 5})), tensor(dims({B, C, 5, 5})), tensor(dims({B, 1, 5, 5})),
                              tensor(dims({B, C, 1, 1}))};
    PluginTensorDesc out[1] = {tensor(dims({B, C, 5, 5}))};
    void const* inputs[4] = {fs.data(), fi.data(), ms.data(), mc.data()};
    void* outputs[1] = {got.data()};
    int status = rt->enqueue(in, out, inputs, outputs, nullptr, nullptr);
    stylert_bafs_blend_cpu(fs.data(), fi.data(), ms.data(), mc.data(), want.data(), B, C, P, STYLERT_F32, nullptr);
    bool same = status == 0;
    for (size_t i = 0; same && i < got.size(); ++i) same = got[i] == want[i];
    check(same, "BAFSBlend enqueue == the C ABI call");
    delete p;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s libstylert_plugins.so\n", argv[0]);
        return 2;
    }
    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        std::fprintf(stderr, "dlopen: %s\n", dlerror());
        return 2;
    }
    using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
    check(getCreators != nullptr && dlsym(lib, "setLoggerFinder") != nullptr, "entry points getCreators, setLoggerFinder");
    if (!getCreators) return 1;
    int32_t n = 0;
    IPluginCreatorInterface* const* creators = getCreators(n);
    check(n == 2, "two creators");
    for (int32_t i = 0; i < n; ++i)
        check(std::string(creators[i]->getInterfaceInfo().kind) == "PLUGIN CREATOR_V3ONE", "creator is IPluginCreatorV3One");

    IPluginCreatorV3One* conv = find(creators, n, "ModulatedConv2d");
    IPluginCreatorV3One* blend = find(creators, n, "BAFSBlend");
    check(conv && blend, "ModulatedConv2d and BAFSBlend creators");
    if (!conv || !blend) return 1;
    check(std::string(conv->getPluginNamespace()) == "stylert" && std::string(conv->getPluginVersion()) == "1",
          "namespace 'stylert', version '1' (the ONNX nodes' plugin_namespace / plugin_version)");
    check(conv->getFieldNames()->nbFields == 5, "ModulatedConv2d declares 5 fields");

    // Attributes as the ONNX parser passes them (ints as INT32), with one given as INT64.
    int32_t up = 2, padding = 1;
    int64_t demod = 1;
    float clamp = 256.0f;
    char const activation[] = "lrelu";
    PluginField fields[] = {PluginField("up", &up, PluginFieldType::kINT32, 1),
                            PluginField("padding", &padding, PluginFieldType::kINT32, 1),
                            PluginField("demodulate", &demod, PluginFieldType::kINT64, 1),
                            PluginField("activation", activation, PluginFieldType::kCHAR, sizeof(activation)),
                            PluginField("clamp", &clamp, PluginFieldType::kFLOAT32, 1)};
    PluginFieldCollection fc{5, fields};
    IPluginV3* plugin = conv->createPlugin("conv0", &fc, TensorRTPhase::kBUILD);
    check(plugin != nullptr, "createPlugin from ONNX-style attributes");
    if (!plugin) return 1;
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    check(core && build && runtime, "core, build and runtime capabilities");
    check(std::string(core->getPluginName()) == "ModulatedConv2d", "plugin name");

    // Serialization round trip: the fields a runtime-phase creator receives rebuild the same plugin.
    PluginFieldCollection const* saved = runtime->getFieldsToSerialize();
    bool sameFields = saved && saved->nbFields == 5;
    for (int32_t i = 0; sameFields && i < saved->nbFields; ++i) {
        std::string key = saved->fields[i].name;
        if (key == "up") sameFields = *static_cast<int32_t const*>(saved->fields[i].data) == 2;
        if (key == "padding") sameFields = *static_cast<int32_t const*>(saved->fields[i].data) == 1;
        if (key == "demodulate") sameFields = *static_cast<int32_t const*>(saved->fields[i].data) == 1;
        if (key == "activation") sameFields = std::strcmp(static_cast<char const*>(saved->fields[i].data), "lrelu") == 0;
        if (key == "clamp") sameFields = *static_cast<float const*>(saved->fields[i].data) == 256.0f;
    }
    check(sameFields, "getFieldsToSerialize holds up=2 padding=1 demodulate=1 activation=lrelu clamp=256");
    IPluginV3* restored = conv->createPlugin("conv0", saved, TensorRTPhase::kRUNTIME);
    check(restored != nullptr, "createPlugin from the serialized fields");

    // Formats: x/y fp32 or fp16 and equal, styles fp32, weight/bias/noise/filter fp32 or x's type, linear only.
    DynamicPluginTensorDesc io[7] = {
        desc(DataType::kHALF, dims({2, 8, 16, 16})), desc(DataType::kFLOAT, dims({2, 8})),
        desc(DataType::kFLOAT, dims({4, 8, 3, 3})), desc(DataType::kFLOAT, dims({4})),
        desc(DataType::kFLOAT, dims({32, 32})), desc(DataType::kFLOAT, dims({4, 4})),
        desc(DataType::kHALF, dims({2, 4, 32, 32}))};
    bool all = true;
    for (int pos = 0; pos < 7; ++pos) all = all && build->supportsFormatCombination(pos, io, 6, 1);
    check(all, "fp16 x/y with fp32 parameters accepted");
    io[6].desc.type = DataType::kFLOAT;
    check(!build->supportsFormatCombination(6, io, 6, 1), "output type must follow x");
    io[6].desc.type = DataType::kHALF;
    io[2].desc.type = DataType::kHALF;
    check(build->supportsFormatCombination(2, io, 6, 1), "fp16 weight accepted with fp16 x (an fp16 export)");
    io[1].desc.type = DataType::kHALF;
    check(!build->supportsFormatCombination(1, io, 6, 1), "fp16 styles refused (styles stay fp32)");
    io[1].desc.type = DataType::kFLOAT;
    io[0].desc.type = DataType::kFLOAT;
    check(!build->supportsFormatCombination(2, io, 6, 1), "fp16 weight refused with fp32 x");
    io[0].desc.type = DataType::kHALF;
    io[0].desc.format = TensorFormat::kCHW32;
    check(!build->supportsFormatCombination(0, io, 6, 1), "non-linear format refused");
    DataType outType{};
    DataType inTypes[6] = {DataType::kHALF, DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT,
                           DataType::kFLOAT};
    check(build->getOutputDataTypes(&outType, 1, inTypes, 6) == 0 && outType == DataType::kHALF, "output type = x type");
    io[0].desc.format = TensorFormat::kLINEAR;
    io[2].desc.type = DataType::kFLOAT;
    size_t ws = build->getWorkspaceSize(io, 6, io + 6, 1);
    // wsq 8*4 + d 2*4 + one sample's transposed-conv scratch 4*33*33 floats, whatever the batch
    check(ws == (8 * 4 + 2 * 4 + 4 * 33 * 33) * sizeof(float), "workspace = wsq + d + one sample's transposed-conv scratch");
    io[0].max = dims({64, 8, 16, 16});
    check(build->getWorkspaceSize(io, 6, io + 6, 1) == (8 * 4 + 64 * 4 + 4 * 33 * 33) * sizeof(float),
          "batch 64: only d grows with the batch");
    io[0].max = io[0].desc.dims;
    io[2].desc.type = io[3].desc.type = io[4].desc.type = io[5].desc.type = DataType::kHALF;
    check(build->getWorkspaceSize(io, 6, io + 6, 1) == ws + (320 + 64 + 1024 + 64) * sizeof(float),
          "fp16 parameters: room to widen weight, bias, noise and filter (64-float aligned)");

    int32_t badUp = 3;
    PluginField badFields[] = {PluginField("up", &badUp, PluginFieldType::kINT32, 1)};
    PluginFieldCollection bad{1, badFields};
    check(conv->createPlugin("bad", &bad, TensorRTPhase::kBUILD) == nullptr, "up=3 refused");
    char const wrongAct[] = "relu";
    PluginField badAct[] = {PluginField("activation", wrongAct, PluginFieldType::kCHAR, sizeof(wrongAct))};
    PluginFieldCollection bad2{1, badAct};
    check(conv->createPlugin("bad", &bad2, TensorRTPhase::kBUILD) == nullptr, "activation 'relu' refused");

    IPluginV3* b = blend->createPlugin("blend0", nullptr, TensorRTPhase::kBUILD);
    auto* bbuild = b ? static_cast<IPluginV3OneBuild*>(b->getCapabilityInterface(PluginCapabilityType::kBUILD)) : nullptr;
    DynamicPluginTensorDesc bio[5] = {desc(DataType::kFLOAT, dims({1, 4, 8, 8})), desc(DataType::kFLOAT, dims({1, 4, 8, 8})),
                                      desc(DataType::kFLOAT, dims({1, 1, 8, 8})), desc(DataType::kFLOAT, dims({1, 4, 1, 1})),
                                      desc(DataType::kFLOAT, dims({1, 4, 8, 8}))};
    bool ok = bbuild != nullptr;
    for (int pos = 0; ok && pos < 5; ++pos) ok = bbuild->supportsFormatCombination(pos, bio, 4, 1);
    check(ok, "BAFSBlend: fp32 everywhere accepted");
    bio[3].desc.type = DataType::kHALF;
    check(bbuild && !bbuild->supportsFormatCombination(3, bio, 4, 1), "BAFSBlend: mixed types refused");

    checkEnqueue(conv, blend);

    delete plugin;
    delete restored;
    delete b;
    std::printf("%d failure(s)\n", gFailures);
    return gFailures ? 1 : 0;
}
