package io.github.lora4j;

import java.util.Arrays;
import java.util.Objects;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.memory.MemoryWorkspace;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * One named adapter of a {@link LoraLinear}: {@code A [r, in]}, {@code B [out, r]}, their gradient
 * buffers and the configuration they were made with; a DoRA adapter ({@link LoraConfig#useDora()}) also has its
 * magnitude {@code m [out]} and that gradient. A {@link LoraEmbedding}'s adapters have
 * {@code A [r, num_embeddings]} and {@code B [dim, r]}; a {@link LoraConv2d}'s {@code A [r, in·kh·kw]} and
 * {@code B [out, r]} (the conv shapes flattened).
 *
 * <p>The arrays returned here are the live parameters, not copies: an optimizer updates them in place
 * (see {@code io.github.lora4j.train}). Do that only through
 * {@link LoraLinear#updateTrainable(java.util.function.Consumer)}, which refuses while the adapter is
 * merged into {@code W}; writing them directly while merged would make the next unmerge wrong.
 */
public final class LoraAdapter {

    private final String name;
    private final LoraConfig config;
    private final INDArray a;
    private final INDArray b;
    /** Gradient buffers, allocated together on first use: an adapter that is only served holds none. */
    private volatile INDArray gradA;
    private volatile INDArray gradB;
    /** DoRA's magnitude and norms, or null for plain LoRA. */
    private final Dora dora;
    private DropoutStream dropoutStream;
    /** Run-time strength (PEFT's {@code set_scale}); 1 unless {@link LoraLinear#setAdapterScale} changed it. */
    private volatile double scale = 1.0;
    /** {@code scale·alpha / r} (or {@code / sqrt(r)}), computed once per change so every path reads one field. */
    private volatile double scaling;
    /**
     * {@code A} and {@code B} as blocks holding their host addresses, resolved on the mixed batch's first use on the
     * direct route and kept: ND4J's {@code addressPointer()} costs one to several µs, as much as a row's whole path.
     * The arrays are final and never reallocated, so the addresses stay valid. Racing readers resolve the same values.
     */
    private volatile Kernels.Block[] hostBlocks;

    /**
     * {@code {A, B}} as blocks for the mixed batch's block products; on the direct route with their host addresses
     * resolved once per adapter, else made anew (the fallback route needs no address).
     */
    Kernels.Block[] blocks() {
        Kernels.Block[] kept = hostBlocks;
        if (kept != null && Kernels.direct()) {
            return kept;
        }
        Kernels.Block[] made = {Kernels.Block.of(a), Kernels.Block.of(b)};
        if (made[0].host() != null && made[1].host() != null) {
            hostBlocks = made;
        }
        return made;
    }

    LoraAdapter(String name, LoraConfig config, INDArray a, INDArray b, Dora dora) {
        this.name = Objects.requireNonNull(name, "name");
        this.config = Objects.requireNonNull(config, "config");
        this.a = a;
        this.b = b;
        this.dora = dora;
        this.scaling = config.scaling();
    }

    /**
     * The adapter's name.
     *
     * @return the name it was added under, unique within its layer
     */
    public String name() {
        return name;
    }

    /**
     * The configuration the adapter was created with.
     *
     * @return the immutable config, as given; a run-time {@link #scale()} does not change it
     */
    public LoraConfig config() {
        return config;
    }

    /**
     * Rank {@code r}.
     *
     * @return {@code config().rank()}, the rows of {@code A} and columns of {@code B}
     */
    public int rank() {
        return config.rank();
    }

    /**
     * Scaling {@code s} of the update: {@code scale·alpha / r}, or {@code scale·alpha / sqrt(r)} with rsLoRA, where
     * {@code scale} is the {@link #scale() run-time scale} (1 by default, so {@code s = config().scaling()}). Forward,
     * backward, merge, mixed batches and weighted combinations all read this value.
     *
     * @return the current scaling {@code s}, a finite value of the layer's data type
     */
    public double scaling() {
        return scaling;
    }

    /**
     * The run-time scale (PEFT's {@code set_scale}).
     *
     * @return the value last set by {@link LoraLinear#setAdapterScale} (or the embedding's or conv layer's), 1 by
     *         default
     */
    public double scale() {
        return scale;
    }

    /**
     * The alpha the adapter computes with: {@code scale·alpha}. Adapter files store it as {@code lora_alpha}, so a
     * loaded file computes what the saved adapter did.
     *
     * @return {@code scale()·config().alpha()}
     */
    public double effectiveAlpha() {
        return scale * config.alpha();
    }

    /**
     * The scaling {@code scale·alpha / r} (or {@code / sqrt(r)}) of {@code config} at {@code scale}: bitwise the
     * scaling of a config built with {@code alpha·scale}.
     *
     * @throws IllegalArgumentException unless {@code scale} is finite and the scaling a finite value of {@code type}
     */
    static double scaledScaling(LoraConfig config, double scale, DataType type,
                                String name) {
        return config.scaling(scale, type, "scale of adapter '" + name + "'");
    }

    /** Sets the run-time scale; the caller checked it with {@link #scaledScaling} and holds the layer's lock. */
    void setScale(double scale, double scaling) {
        this.scale = scale;
        this.scaling = scaling;
        changed();
    }

    /**
     * The down-projection {@code A} (PEFT's {@code lora_A.weight}).
     *
     * @return the live array {@code [r, in]}, c-order, of the layer's type: not a copy; change it only through the
     *         layer's {@code updateTrainable} or {@code setAdapterWeights}
     */
    public INDArray a() {
        return a;
    }

    /**
     * The up-projection {@code B} (PEFT's {@code lora_B.weight}).
     *
     * @return the live array {@code [out, r]}, c-order, of the layer's type: not a copy; change it only through the
     *         layer's {@code updateTrainable} or {@code setAdapterWeights}
     */
    public INDArray b() {
        return b;
    }

    /**
     * The accumulated gradient {@code dL/dA}: each backward adds to it. The two gradient buffers are allocated (as
     * zeros) on the first call of this method or {@link #gradB()}, so an adapter that is only served for inference
     * holds no gradient memory.
     *
     * @return the live buffer {@code [r, in]}, c-order and contiguous (as ND4J's updaters need), not a copy; cleared
     *         by the layer's {@code zeroGrad()} (e.g. {@link LoraLinear#zeroGrad()})
     */
    public INDArray gradA() {
        INDArray g = gradA;
        return g != null ? g : allocateGradients()[0];
    }

    /**
     * The accumulated gradient {@code dL/dB}: each backward adds to it; allocated with {@link #gradA()}'s buffer.
     *
     * @return the live buffer {@code [out, r]}, c-order and contiguous (as ND4J's updaters need), not a copy; cleared
     *         by the layer's {@code zeroGrad()} (e.g. {@link LoraLinear#zeroGrad()})
     */
    public INDArray gradB() {
        INDArray g = gradB;
        return g != null ? g : allocateGradients()[1];
    }

    /** Whether the gradient buffers exist (some call of {@link #gradA()} or {@link #gradB()} made them). */
    boolean hasGradientBuffers() {
        return gradB != null;
    }

    /** Both gradient buffers, made once (zeros, c-order, outside any ND4J workspace so they outlive its cycles). */
    private synchronized INDArray[] allocateGradients() {
        if (gradB == null) {
            try (MemoryWorkspace ignored = Nd4j.getWorkspaceManager().scopeOutOfWorkspaces()) {
                // c-order and contiguous: ND4J's updaters silently skip anything else.
                gradA = Nd4j.zeros(a.dataType(), a.shape());
                gradB = Nd4j.zeros(b.dataType(), b.shape());
            }
        }
        return new INDArray[] {gradA, gradB};
    }

    /**
     * DoRA's magnitude vector {@code m} (PEFT's {@code lora_magnitude_vector}): the norm each output row of
     * {@code W + s·B·A} is rescaled to.
     *
     * @return the live array {@code [out]}, c-order, of the layer's type, not a copy; null for a plain LoRA adapter.
     *         Change it only through the layer's {@code updateTrainable} or {@code setAdapterWeights}
     */
    public INDArray magnitude() {
        return dora == null ? null : dora.magnitude();
    }

    /**
     * The accumulated gradient {@code dL/dm} of a DoRA adapter: each backward adds to it.
     *
     * @return the live buffer {@code [out]}, c-order and contiguous, not a copy; null for a plain LoRA adapter;
     *         cleared by the layer's {@code zeroGrad()}
     */
    public INDArray gradMagnitude() {
        return dora == null ? null : dora.gradMagnitude();
    }

    /**
     * Whether this is a DoRA adapter.
     *
     * @return {@code config().useDora()}
     */
    public boolean isDora() {
        return dora != null;
    }

    /**
     * Trainable parameters of this adapter, as PEFT counts them.
     *
     * @return {@code r·(in + out)}, the elements of {@code A} and {@code B}, plus {@code out} for a DoRA magnitude
     */
    public long parameterCount() {
        return a.length() + b.length() + (dora == null ? 0 : dora.magnitude().length());
    }

    /** DoRA's part, or null. */
    Dora dora() {
        return dora;
    }

    /** Drops what is derived from A, B, m and the scale (DoRA's norms); the caller holds the layer's exclusive lock. */
    void changed() {
        if (dora != null) {
            dora.invalidate();
        }
    }

    /**
     * The dropout mask stream, created on first use from the config ({@link DropoutStream}'s rule): masks drawn in
     * Java, the same on every backend and host, with no ND4J random op on the hot path.
     */
    DropoutStream dropoutStream() {
        if (dropoutStream == null) {
            dropoutStream = DropoutStream.of(config);
        }
        return dropoutStream;
    }

    @Override
    public String toString() {
        return "LoraAdapter{name=" + name + ", A=" + Arrays.toString(a.shape()) + ", B="
                + Arrays.toString(b.shape()) + (dora == null ? "" : ", DoRA m=" + Arrays.toString(magnitude().shape()))
                + ", scaling=" + scaling() + (scale == 1.0 ? "" : ", scale=" + scale) + "}";
    }
}
