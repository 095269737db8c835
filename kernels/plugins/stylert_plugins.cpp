// TensorRT IPluginV3 plugins for the plugin-flavour graphs (`stylert export --flavor plugin`):
//   stylert::ModulatedConv2d v1 -> stylert_modulated_conv2d (kernels.cu), the reference kernel: the tensor-core
//                                  stylert_fused_modulated_conv2d takes its place only once the GPU check's
//                                  stage b has shown it correct on a GPU (kernels/README.md)
//   stylert::BAFSBlend v1       -> stylert_bafs_blend
// The ONNX parser finds them by op type, `plugin_version` and `plugin_namespace` ("stylert") and
// passes the node's attributes as plugin fields. Node contracts: export/stylert_export/plugin_ops.py.
// The library has the standard entry points for dynamic loading (getCreators, setLoggerFinder),
// so `trtexec --dynamicPlugins` / IPluginRegistry::loadLibrary / `stylert build-engine --plugins` load it.
//
// Built against the headers of the NVIDIA/TensorRT repository; compiled in CI when they are
// present. Never run here: no TensorRT runtime or GPU in this workplace.
#include "NvInferRuntime.h"
#include "stylert_kernels.h"

#ifdef STYLERT_PLUGIN_HOST_TEST  // plugin_check: the same plugin glue over the CPU reference kernels
#define stylert_modulated_conv2d stylert_modulated_conv2d_cpu
#define stylert_bafs_blend stylert_bafs_blend_cpu
#define stylert_half_to_float stylert_half_to_float_cpu
#endif

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace {

constexpr char const* kNamespace = "stylert";
constexpr char const* kVersion = "1";
ILoggerFinder* gLoggerFinder = nullptr;

void logError(std::string const& message) noexcept {
    ILogger* logger = gLoggerFinder ? gLoggerFinder->findLogger() : nullptr;
    if (logger) logger->log(ILogger::Severity::kERROR, ("stylert plugin: " + message).c_str());
}

bool isFloat(DataType t) { return t == DataType::kFLOAT || t == DataType::kHALF; }
stylert_dtype toDtype(DataType t) { return t == DataType::kHALF ? STYLERT_F16 : STYLERT_F32; }

// Attribute readers tolerant of how a producer typed them (the ONNX parser gives ints as INT32).
bool readInt(PluginField const& f, int32_t& out) {
    if (f.length < 1 || !f.data) return false;
    if (f.type == PluginFieldType::kINT32) out = *static_cast<int32_t const*>(f.data);
    else if (f.type == PluginFieldType::kINT64) out = static_cast<int32_t>(*static_cast<int64_t const*>(f.data));
    else return false;
    return true;
}

bool readFloat(PluginField const& f, float& out) {
    if (f.length < 1 || !f.data) return false;
    if (f.type == PluginFieldType::kFLOAT32) out = *static_cast<float const*>(f.data);
    else if (f.type == PluginFieldType::kFLOAT64) out = static_cast<float>(*static_cast<double const*>(f.data));
    else return false;
    return true;
}

bool readString(PluginField const& f, std::string& out) {
    if (f.type != PluginFieldType::kCHAR || !f.data) return false;
    char const* p = static_cast<char const*>(f.data);
    out.assign(p, strnlen(p, static_cast<size_t>(f.length)));
    return true;
}

// What every plugin here shares: the three capabilities in one object, and its identity.
class PluginBase : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild, public IPluginV3OneRuntime {
public:
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
        switch (type) {
        case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
        case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }
    char const* getPluginVersion() const noexcept override { return kVersion; }
    char const* getPluginNamespace() const noexcept override { return kNamespace; }
    int32_t getNbOutputs() const noexcept override { return 1; }
    int32_t getOutputDataTypes(DataType* out, int32_t nbOutputs, DataType const* in, int32_t nbInputs) const noexcept override {
        if (nbOutputs != 1 || nbInputs < 1) return -1;
        out[0] = in[0];
        return 0;
    }
    int32_t configurePlugin(DynamicPluginTensorDesc const*, int32_t, DynamicPluginTensorDesc const*, int32_t) noexcept override {
        return 0;
    }
    int32_t onShapeChange(PluginTensorDesc const*, int32_t, PluginTensorDesc const*, int32_t) noexcept override { return 0; }
    IPluginV3* attachToContext(IPluginResourceContext*) noexcept override { return clone(); }
};

// ---------------------------------------------------------------------------------------------
// ModulatedConv2d(x, styles, weight, bias, noise, resample_filter) -> y; attrs up, padding,
// demodulate, activation ("lrelu" | "linear"), clamp (< 0: none). x and y fp32 or fp16; styles
// fp32; weight, bias, noise and filter fp32 or of x's type (an fp16 export stores them in fp16:
// they are widened to fp32 in the workspace before the kernel). noise and resample_filter are
// [1, 1] zeros when absent.
constexpr int kParams[] = {2, 3, 4, 5};  // weight, bias, noise, resample_filter

size_t volume(Dims const& d) {
    size_t n = 1;
    for (int i = 0; i < d.nbDims; ++i) n *= static_cast<size_t>(d.d[i] > 0 ? d.d[i] : 0);
    return n;
}

// Floats of workspace the fp16 parameters take once widened (0 for fp32 ones), each rounded up to 64 floats.
size_t paramFloats(DataType const* types, Dims const* shapes) {
    size_t n = 0;
    for (int k : kParams)
        if (types[k] == DataType::kHALF) n += (volume(shapes[k]) + 63) / 64 * 64;
    return n;
}
struct ModConvAttrs {
    int32_t up{1};
    int32_t padding{0};
    int32_t demodulate{1};
    int32_t lrelu{1};
    float clamp{-1.0f};
};

class ModulatedConv2dPlugin final : public PluginBase {
public:
    explicit ModulatedConv2dPlugin(ModConvAttrs attrs) : mAttrs(attrs) {}

    IPluginV3* clone() noexcept override { return new (std::nothrow) ModulatedConv2dPlugin(mAttrs); }
    char const* getPluginName() const noexcept override { return "ModulatedConv2d"; }

    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* io, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override {
        if (nbInputs != 6 || nbOutputs != 1 || pos < 0 || pos > 6) return false;
        PluginTensorDesc const& d = io[pos].desc;
        if (d.format != TensorFormat::kLINEAR) return false;
        if (pos == 0) return isFloat(d.type);
        if (pos == 6) return d.type == io[0].desc.type;
        if (pos == 1) return d.type == DataType::kFLOAT;
        return d.type == DataType::kFLOAT || d.type == io[0].desc.type;
    }

    int32_t getOutputShapes(DimsExprs const* in, int32_t nbInputs, DimsExprs const*, int32_t, DimsExprs* out,
                            int32_t nbOutputs, IExprBuilder& eb) noexcept override {
        if (nbInputs != 6 || nbOutputs != 1 || in[0].nbDims != 4 || in[2].nbDims != 4) return -1;
        int64_t offset = 0;
        if (!sizeOffset(in, offset)) {
            logError("ModulatedConv2d needs constant weight and filter shapes");
            return -1;
        }
        out[0].nbDims = 4;
        out[0].d[0] = in[0].d[0];
        out[0].d[1] = in[2].d[0];
        for (int axis = 2; axis < 4; ++axis)
            out[0].d[axis] = eb.operation(DimensionOperation::kSUM,
                                          *eb.operation(DimensionOperation::kPROD, *in[0].d[axis], *eb.constant(mAttrs.up)),
                                          *eb.constant(offset));
        return 0;
    }

    size_t getWorkspaceSize(DynamicPluginTensorDesc const* in, int32_t, DynamicPluginTensorDesc const*, int32_t) const noexcept override {
        Dims const& x = in[0].max;
        Dims const& w = in[2].desc.dims;
        DataType types[6];
        Dims shapes[6];
        for (int i = 0; i < 6; ++i) {
            types[i] = in[i].desc.type;
            shapes[i] = in[i].max;
        }
        return stylert_modulated_conv2d_workspace(static_cast<int>(x.d[0]), static_cast<int>(x.d[1]),
                                                  static_cast<int>(w.d[0]), static_cast<int>(x.d[2]),
                                                  static_cast<int>(x.d[3]), static_cast<int>(w.d[2]), mAttrs.up) +
               paramFloats(types, shapes) * sizeof(float);
    }

    int32_t enqueue(PluginTensorDesc const* in, PluginTensorDesc const* out, void const* const* inputs,
                    void* const* outputs, void* workspace, cudaStream_t stream) noexcept override {
        Dims const& x = in[0].dims;
        Dims const& w = in[2].dims;
        Dims const& y = out[0].dims;
        Dims const& n = in[4].dims;  // [1, 1] zeros stand for "no noise"
        bool hasNoise = n.nbDims == 2 && n.d[0] == y.d[2] && n.d[1] == y.d[3] && y.d[2] * y.d[3] > 1;
        // fp16 parameters are widened after the kernel's own workspace (sized for this batch, which
        // never exceeds what getWorkspaceSize reserved for the largest).
        size_t kernelBytes = stylert_modulated_conv2d_workspace(static_cast<int>(x.d[0]), static_cast<int>(x.d[1]),
                                                                static_cast<int>(w.d[0]), static_cast<int>(x.d[2]),
                                                                static_cast<int>(x.d[3]), static_cast<int>(w.d[2]), mAttrs.up);
        float* spare = reinterpret_cast<float*>(static_cast<char*>(workspace) + kernelBytes);
        float const* params[6] = {};
        for (int k : kParams) {
            params[k] = static_cast<float const*>(inputs[k]);
            if (in[k].type != DataType::kHALF) continue;
            size_t count = volume(in[k].dims);
            int converted = stylert_half_to_float(inputs[k], spare, count, stream);
            if (converted != STYLERT_OK) {
                logError("ModulatedConv2d could not widen an fp16 parameter, status " + std::to_string(converted));
                return converted;
            }
            params[k] = spare;
            spare += (count + 63) / 64 * 64;
        }
        int status = stylert_modulated_conv2d(
            inputs[0], static_cast<float const*>(inputs[1]), params[2], params[3], hasNoise ? params[4] : nullptr,
            mAttrs.up == 2 ? params[5] : nullptr, outputs[0], workspace,
            static_cast<int>(x.d[0]), static_cast<int>(x.d[1]), static_cast<int>(w.d[0]), static_cast<int>(x.d[2]),
            static_cast<int>(x.d[3]), static_cast<int>(w.d[2]), mAttrs.up, mAttrs.padding,
            static_cast<int>(in[5].dims.d[0]), mAttrs.demodulate, mAttrs.lrelu, 1.41421356237f, mAttrs.clamp,
            toDtype(in[0].type), stream);
        if (status != STYLERT_OK) logError("ModulatedConv2d kernel failed with status " + std::to_string(status));
        return status;
    }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override {
        mActivation = mAttrs.lrelu ? "lrelu" : "linear";
        mFields = {PluginField("up", &mAttrs.up, PluginFieldType::kINT32, 1),
                   PluginField("padding", &mAttrs.padding, PluginFieldType::kINT32, 1),
                   PluginField("demodulate", &mAttrs.demodulate, PluginFieldType::kINT32, 1),
                   PluginField("activation", mActivation.c_str(), PluginFieldType::kCHAR,
                               static_cast<int32_t>(mActivation.size() + 1)),
                   PluginField("clamp", &mAttrs.clamp, PluginFieldType::kFLOAT32, 1)};
        mCollection.nbFields = static_cast<int32_t>(mFields.size());
        mCollection.fields = mFields.data();
        return &mCollection;
    }

private:
    // Output size = up * input size + offset (NVlabs conv2d_resample geometry, as in kernels_common.h).
    bool sizeOffset(DimsExprs const* in, int64_t& offset) const {
        if (!in[2].d[2]->isConstant() || !in[5].d[0]->isConstant()) return false;
        int k = static_cast<int>(in[2].d[2]->getConstantValue());
        int f = static_cast<int>(in[5].d[0]->getConstantValue());
        int const probe = 16;  // the offset does not depend on the input size
        int size = stylert_modulated_conv2d_output_size(probe, k, mAttrs.up, mAttrs.padding, f);
        if (size < 0) return false;
        offset = size - static_cast<int64_t>(mAttrs.up) * probe;
        return true;
    }

    ModConvAttrs mAttrs;
    std::string mActivation;
    std::vector<PluginField> mFields;
    PluginFieldCollection mCollection{};
};

// ---------------------------------------------------------------------------------------------
// BAFSBlend(f_s [B,C,H,W], f_i [B,C,H,W], m_s [B,1,H,W], m_c [B,C,1,1]) -> m_s m_c f_s + (1 - m_s)(1 - m_c) f_i
class BAFSBlendPlugin final : public PluginBase {
public:
    IPluginV3* clone() noexcept override { return new (std::nothrow) BAFSBlendPlugin(); }
    char const* getPluginName() const noexcept override { return "BAFSBlend"; }

    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* io, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override {
        if (nbInputs != 4 || nbOutputs != 1 || pos < 0 || pos > 4) return false;
        PluginTensorDesc const& d = io[pos].desc;
        return d.format == TensorFormat::kLINEAR && (pos == 0 ? isFloat(d.type) : d.type == io[0].desc.type);
    }

    int32_t getOutputShapes(DimsExprs const* in, int32_t nbInputs, DimsExprs const*, int32_t, DimsExprs* out,
                            int32_t nbOutputs, IExprBuilder&) noexcept override {
        if (nbInputs != 4 || nbOutputs != 1 || in[0].nbDims != 4) return -1;
        out[0] = in[0];
        return 0;
    }

    int32_t enqueue(PluginTensorDesc const* in, PluginTensorDesc const*, void const* const* inputs,
                    void* const* outputs, void*, cudaStream_t stream) noexcept override {
        Dims const& d = in[0].dims;
        int status = stylert_bafs_blend(inputs[0], inputs[1], inputs[2], inputs[3], outputs[0], static_cast<int>(d.d[0]),
                                        static_cast<int>(d.d[1]), static_cast<int>(d.d[2] * d.d[3]),
                                        toDtype(in[0].type), stream);
        if (status != STYLERT_OK) logError("BAFSBlend kernel failed with status " + std::to_string(status));
        return status;
    }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override { return &mCollection; }

private:
    PluginFieldCollection mCollection{};
};

// ---------------------------------------------------------------------------------------------
template <typename Plugin>
class Creator final : public IPluginCreatorV3One {
public:
    Creator(char const* name, std::vector<PluginField> fields) : mName(name), mFields(std::move(fields)) {
        mCollection.nbFields = static_cast<int32_t>(mFields.size());
        mCollection.fields = mFields.data();
    }
    char const* getPluginName() const noexcept override { return mName; }
    char const* getPluginVersion() const noexcept override { return kVersion; }
    char const* getPluginNamespace() const noexcept override { return kNamespace; }
    PluginFieldCollection const* getFieldNames() noexcept override { return &mCollection; }
    IPluginV3* createPlugin(char const* name, PluginFieldCollection const* fc, TensorRTPhase) noexcept override;

private:
    char const* mName;
    std::vector<PluginField> mFields;
    PluginFieldCollection mCollection{};
};

template <>
IPluginV3* Creator<ModulatedConv2dPlugin>::createPlugin(char const* name, PluginFieldCollection const* fc,
                                                        TensorRTPhase) noexcept {
    ModConvAttrs a;
    for (int32_t i = 0; fc && i < fc->nbFields; ++i) {
        PluginField const& f = fc->fields[i];
        std::string key = f.name ? f.name : "";
        std::string activation;
        bool ok = true;
        if (key == "up") ok = readInt(f, a.up);
        else if (key == "padding") ok = readInt(f, a.padding);
        else if (key == "demodulate") ok = readInt(f, a.demodulate);
        else if (key == "clamp") ok = readFloat(f, a.clamp);
        else if (key == "activation") {
            ok = readString(f, activation) && (activation == "lrelu" || activation == "linear");
            a.lrelu = activation == "lrelu";
        }
        if (!ok) {
            logError(std::string(name ? name : "?") + ": bad ModulatedConv2d attribute '" + key + "'");
            return nullptr;
        }
    }
    if (a.up != 1 && a.up != 2) {
        logError(std::string(name ? name : "?") + ": ModulatedConv2d up must be 1 or 2");
        return nullptr;
    }
    return new (std::nothrow) ModulatedConv2dPlugin(a);
}

template <>
IPluginV3* Creator<BAFSBlendPlugin>::createPlugin(char const*, PluginFieldCollection const*, TensorRTPhase) noexcept {
    return new (std::nothrow) BAFSBlendPlugin();
}

Creator<ModulatedConv2dPlugin> gModConvCreator(
    "ModulatedConv2d", {PluginField("up", nullptr, PluginFieldType::kINT32, 1),
                        PluginField("padding", nullptr, PluginFieldType::kINT32, 1),
                        PluginField("demodulate", nullptr, PluginFieldType::kINT32, 1),
                        PluginField("activation", nullptr, PluginFieldType::kCHAR, 0),
                        PluginField("clamp", nullptr, PluginFieldType::kFLOAT32, 1)});
Creator<BAFSBlendPlugin> gBlendCreator("BAFSBlend", {});
IPluginCreatorInterface* gCreators[] = {&gModConvCreator, &gBlendCreator};

}  // namespace

#define STYLERT_PLUGIN_API __attribute__((visibility("default")))  // the library's only exported symbols

extern "C" STYLERT_PLUGIN_API void setLoggerFinder(ILoggerFinder* finder) { gLoggerFinder = finder; }

extern "C" STYLERT_PLUGIN_API IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    nbCreators = static_cast<int32_t>(sizeof(gCreators) / sizeof(gCreators[0]));
    return gCreators;
}
