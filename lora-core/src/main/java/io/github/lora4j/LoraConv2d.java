package io.github.lora4j;

import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.convolution.Convolution;
import org.nd4j.linalg.factory.Nd4j;

/**
 * A 2-D convolution with a frozen kernel and LoRA adapters, as PEFT's {@code lora.Conv2d}, for inference and
 * merging: {@code y = conv(x, W) + b + s·conv1x1(conv(x, A), B)} with {@code W [out, in, kh, kw]},
 * {@code A [r, in, kh, kw]} (a convolution with the base's kernel, stride and padding) and {@code B [out, r, 1, 1]}
 * (PEFT's {@code lora_A.weight} / {@code lora_B.weight}). The update of the kernel is
 * {@code ΔW = s·(B[:, :, 0, 0] · A.reshape(r, in·kh·kw)).reshape(out, in, kh, kw)}.
 *
 * <p>Inputs are {@code [n, in, h, w]} (NCHW); outputs {@code [n, out, oh, ow]} with
 * {@code oh = (h + 2·ph − kh) / sy + 1}. Dilation and groups are 1. There is no training mode and no backward:
 * train conv adapters elsewhere (PEFT) and load them here.
 *
 * <p>How: the input is unfolded (im2col) to {@code cols [n·oh·ow, in·kh·kw]}, and a {@link LoraLinear} over the
 * kernel viewed as {@code [out, in·kh·kw]} computes {@code cols·W^T + b + s·(cols·A^T)·B^T} and does the merging,
 * so {@link #merge()} / {@link #unmerge()} have its guarantees (exact by default: unmerge restores the kernel bit for
 * bit). The kernel must therefore be c-order and contiguous; it is referenced, not copied, and only merge and
 * unmerge write it.
 */
public final class LoraConv2d implements LoraModule {

    private final INDArray weight;
    private final int[] stride;
    private final int[] padding;
    private final long in;
    private final long out;
    private final int kh;
    private final int kw;
    private final LoraLinear delegate;

    private LoraConv2d(INDArray weight, INDArray bias, int[] stride, int[] padding) {
        this.weight = weight;
        this.stride = stride.clone();
        this.padding = padding.clone();
        this.out = weight.size(0);
        this.in = weight.size(1);
        this.kh = Math.toIntExact(weight.size(2));
        this.kw = Math.toIntExact(weight.size(3));
        INDArray flat = weight.reshape('c', out, in * kh * kw);
        LoraLinear d;
        try {
            d = LoraLinear.base(flat, bias, WeightLayout.OUT_IN);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("conv kernel [out, in, kh, kw]: " + e.getMessage(), e);
        }
        this.delegate = d;
    }

    /**
     * Wraps a convolution without adapters.
     *
     * @param weight  kernel {@code [out, in, kh, kw]}, FLOAT or DOUBLE, c-order and contiguous; referenced
     * @param bias    {@code [out]} or null
     * @param stride  {@code {sy, sx}}, each at least 1
     * @param padding {@code {ph, pw}} zero padding, each at least 0; stride and padding are copied
     * @return a new layer with no adapter: until one is added and activated, {@link #forward} is the plain convolution
     * @throws NullPointerException     if {@code weight}, {@code stride} or {@code padding} is null
     * @throws IllegalArgumentException if the kernel is not a non-empty, c-order, contiguous, finite FLOAT or DOUBLE
     *                                  array {@code [out, in, kh, kw]}, the bias is not {@code [out]} of its type and
     *                                  finite, or a stride or padding is out of range; the message names expected and
     *                                  actual
     */
    public static LoraConv2d base(INDArray weight, INDArray bias, int[] stride, int[] padding) {
        Objects.requireNonNull(weight, "weight must not be null");
        Objects.requireNonNull(stride, "stride must not be null");
        Objects.requireNonNull(padding, "padding must not be null");
        if (weight.rank() != 4) {
            throw new IllegalArgumentException("conv kernel must be [out, in, kh, kw], got shape "
                    + Arrays.toString(weight.shape()));
        }
        long[] shape = weight.shape();
        long[] cStrides = {shape[1] * shape[2] * shape[3], shape[2] * shape[3], shape[3], 1};
        if (!Arrays.equals(weight.stride(), cStrides)) {
            throw new IllegalArgumentException("conv kernel must be c-order and contiguous (it is merged through a "
                    + "[out, in*kh*kw] view): expected strides " + Arrays.toString(cStrides) + ", got "
                    + Arrays.toString(weight.stride()));
        }
        if (stride.length != 2 || stride[0] < 1 || stride[1] < 1 || padding.length != 2 || padding[0] < 0
                || padding[1] < 0) {
            throw new IllegalArgumentException("expected stride {sy, sx} >= 1 and padding {ph, pw} >= 0, got stride "
                    + Arrays.toString(stride) + " and padding " + Arrays.toString(padding));
        }
        return new LoraConv2d(weight, bias, stride, padding);
    }

    /**
     * Input channels.
     *
     * @return {@code in}, the kernel's second dimension
     */
    public long inChannels() {
        return in;
    }

    /**
     * Output channels.
     *
     * @return {@code out}, the kernel's first dimension
     */
    public long outChannels() {
        return out;
    }

    /**
     * The kernel's spatial size.
     *
     * @return a new array {@code {kh, kw}}
     */
    public int[] kernelSize() {
        return new int[] {kh, kw};
    }

    /**
     * The kernel's data type, and so the type of the inputs the layer accepts and the outputs it returns.
     *
     * @return FLOAT or DOUBLE
     */
    public DataType dataType() {
        return delegate.dataType();
    }

    /**
     * The live kernel (merged adapters included); do not modify it.
     *
     * @return the very array given to {@link #base}, {@code [out, in, kh, kw]}: not a copy, so it changes on
     *         {@link #merge()} and {@link #unmerge()}
     */
    public INDArray weight() {
        return weight;
    }

    /**
     * The frozen bias.
     *
     * @return {@code [1, out]}, a view of the array given to {@link #base} (not a copy), or null without a bias
     */
    public INDArray bias() {
        return delegate.bias();
    }

    /**
     * The stride.
     *
     * @return a copy of {@code {sy, sx}}
     */
    public int[] stride() {
        return stride.clone();
    }

    /**
     * The zero padding.
     *
     * @return a copy of {@code {ph, pw}}
     */
    public int[] padding() {
        return padding.clone();
    }

    /**
     * All parameters of the layer.
     *
     * @return {@code out·in·kh·kw}, plus {@code out} with a bias, plus every adapter's {@code r·(in·kh·kw + out)}
     */
    public long totalParameterCount() {
        return delegate.totalParameterCount();
    }

    /**
     * Parameters that training (elsewhere) would update.
     *
     * @return {@code r·(in·kh·kw + out)} of the active adapter, or 0 when none is active
     */
    public long trainableParameterCount() {
        return delegate.trainableParameterCount();
    }

    /**
     * Adds an adapter initialised as PEFT does ({@code A} kaiming-uniform over {@code fan_in = in·kh·kw},
     * {@code B = 0}), deterministic from the config's seed; the active adapter does not change. All or nothing: the
     * arguments are checked and the weights drawn before the layer changes.
     *
     * @param name   the new adapter's name: not blank, not {@value LoraLinear#BASE_MODEL}, not already used
     * @param config its configuration, kept as given; dropout is ignored (there is no training mode)
     * @throws NullPointerException     if {@code name} or {@code config} is null
     * @throws IllegalArgumentException if the name is blank, reserved or taken, {@code r < 1}, the
     *                                  scaling is not a finite value of the kernel's type, or the config asks for DoRA
     *                                  (not supported on conv layers)
     */
    public void addAdapter(String name, LoraConfig config) {
        Dora.refuseOn("LoraConv2d", config);
        delegate.addAdapter(name, config);
    }

    /**
     * Makes {@code name} the adapter used by forward and merge; see {@link LoraLinear#setActiveAdapter}.
     *
     * @param name an existing adapter
     * @throws NullPointerException     if {@code name} is null
     * @throws IllegalArgumentException for an unknown name
     * @throws IllegalStateException    while another adapter is merged into the kernel
     */
    public void setActiveAdapter(String name) {
        delegate.setActiveAdapter(name);
    }

    /**
     * The adapter forward and merge use.
     *
     * @return its name, or null when none is active (the output is then the plain convolution)
     */
    public String activeAdapter() {
        return delegate.activeAdapter();
    }

    /**
     * Adapter names, in the order they were added.
     *
     * @return an unmodifiable snapshot: later adds and deletes do not show in it
     */
    public List<String> adapterNames() {
        return delegate.adapterNames();
    }

    /**
     * Removes an adapter; deleting the active one leaves none active (the plain convolution), not silently another.
     *
     * @param name an existing adapter
     * @throws NullPointerException     if {@code name} is null
     * @throws IllegalArgumentException for an unknown name
     * @throws IllegalStateException    if that adapter is merged into the kernel
     */
    public void deleteAdapter(String name) {
        delegate.deleteAdapter(name);
    }

    /**
     * Sets the run-time scale of adapter {@code name}: {@code s' = scale·alpha / r} ({@code / sqrt(r)} with rsLoRA),
     * bitwise the scaling of an adapter made with {@code alpha·scale}; see {@link LoraLinear#setAdapterScale}. The
     * config is unchanged ({@link #adapterConfig}); {@link #scaling} reports {@code s'}.
     *
     * @param name  an existing adapter
     * @param scale any finite value; 1 restores the config's scaling exactly, 0 turns the adapter off
     * @throws NullPointerException     if {@code name} is null
     * @throws IllegalArgumentException for an unknown name, or a scale that is not finite or gives an {@code s'} that
     *                                  is not a finite value of the kernel's type
     * @throws IllegalStateException    while that adapter is merged into the kernel (unmerge first)
     */
    public void setAdapterScale(String name, double scale) {
        delegate.setAdapterScale(name, scale);
    }

    /**
     * The adapter {@code name} as the underlying linear layer holds it.
     *
     * @param name an existing adapter
     * @return the adapter itself, whose live {@code A [r, in·kh·kw]} (the kernel's {@code in, kh, kw} flattened in c
     *         order) and {@code B [out, r]} are not copies: do not modify them (use {@link #setAdapterWeights})
     * @throws NullPointerException     if {@code name} is null
     * @throws IllegalArgumentException for an unknown name
     */
    public LoraAdapter adapter(String name) {
        return delegate.adapter(name);
    }

    /**
     * Turns adapters off: {@link #forward} is then the plain convolution.
     *
     * @throws IllegalStateException while an adapter is merged (its update is inside the kernel)
     */
    public void disableAdapters() {
        delegate.disableAdapters();
    }

    /** Turns adapters back on. */
    public void enableAdapters() {
        delegate.enableAdapters();
    }

    /**
     * Whether adapters take part in the forward pass.
     *
     * @return false after {@link #disableAdapters()}, until {@link #enableAdapters()}
     */
    public boolean adaptersEnabled() {
        return delegate.adaptersEnabled();
    }

    /**
     * The configuration adapter {@code name} was made with.
     *
     * @param name an existing adapter
     * @return its immutable config; a run-time {@link #setAdapterScale scale} does not change it
     * @throws NullPointerException     if {@code name} is null
     * @throws IllegalArgumentException for an unknown name
     */
    public LoraConfig adapterConfig(String name) {
        return delegate.adapter(name).config();
    }

    /**
     * The scaling {@code s} that forward and merge apply for adapter {@code name}.
     *
     * @param name an existing adapter
     * @return {@code scale·alpha / r} ({@code / sqrt(r)} with rsLoRA), with the run-time scale (1 unless
     *         {@link #setAdapterScale} changed it)
     * @throws NullPointerException     if {@code name} is null
     * @throws IllegalArgumentException for an unknown name
     */
    public double scaling(String name) {
        return delegate.adapter(name).scaling();
    }

    /**
     * Adapter {@code name}'s {@code A} in PEFT's conv shape ({@code lora_A.weight}).
     *
     * @param name an existing adapter
     * @return a new c-order copy {@code [r, in, kh, kw]}; changing it does not change the adapter
     * @throws NullPointerException     if {@code name} is null
     * @throws IllegalArgumentException for an unknown name
     */
    public INDArray loraA(String name) {
        INDArray a = delegate.loraA(name);
        return a.dup('c').reshape('c', a.size(0), in, kh, kw);
    }

    /**
     * Adapter {@code name}'s {@code B} in PEFT's conv shape ({@code lora_B.weight}, a 1x1 convolution).
     *
     * @param name an existing adapter
     * @return a new c-order copy {@code [out, r, 1, 1]}; changing it does not change the adapter
     * @throws NullPointerException     if {@code name} is null
     * @throws IllegalArgumentException for an unknown name
     */
    public INDArray loraB(String name) {
        INDArray b = delegate.loraB(name);
        return b.dup('c').reshape('c', out, b.size(1), 1, 1);
    }

    /**
     * Copies {@code a} and {@code b} into adapter {@code name}'s live arrays; both are checked before either is
     * written, so a refused pair changes nothing.
     *
     * @param name an existing adapter
     * @param a    {@code [r, in, kh, kw]} of the kernel's type, finite, any order; copied, not referenced
     * @param b    {@code [out, r, 1, 1]} of the kernel's type, finite, any order; copied, not referenced
     * @throws NullPointerException     if an argument is null
     * @throws IllegalArgumentException for an unknown name, a wrong shape or type, or a non-finite value
     * @throws IllegalStateException    while that adapter is merged into the kernel
     */
    public void setAdapterWeights(String name, INDArray a, INDArray b) {
        Objects.requireNonNull(a, "a must not be null");
        Objects.requireNonNull(b, "b must not be null");
        int r = delegate.adapter(name).rank();
        if (!Arrays.equals(a.shape(), new long[] {r, in, kh, kw}) || !Arrays.equals(b.shape(), new long[] {out, r, 1, 1})) {
            throw new IllegalArgumentException("adapter '" + name + "': expected A [" + r + ", " + in + ", " + kh + ", "
                    + kw + "] and B [" + out + ", " + r + ", 1, 1], got A " + Arrays.toString(a.shape()) + " and B "
                    + Arrays.toString(b.shape()));
        }
        delegate.setAdapterWeights(name, a.dup('c').reshape('c', r, in * kh * kw), b.dup('c').reshape('c', out, r));
    }

    /**
     * {@code conv(x, W) + b + s·conv1x1(conv(x, A), B)} with the active adapter.
     *
     * @param x {@code [n, in, h, w]} (NCHW) of the kernel's type; not modified
     * @return a new c-order array {@code [n, out, oh, ow]}, sharing no memory with {@code x} or the layer
     * @throws NullPointerException     if {@code x} is null
     * @throws IllegalArgumentException for a wrong rank, channel count or type, an input that with its padding is
     *                                  smaller than the kernel, or one (a huge padding) whose im2col matrix
     *                                  {@code [n·oh·ow, in·kh·kw]} has a dimension above {@code 2^31 − 1} or would
     *                                  with the output need more bytes than the machine's physical memory; nothing
     *                                  is allocated then
     */
    public INDArray forward(INDArray x) {
        Objects.requireNonNull(x, "x must not be null");
        if (x.rank() != 4 || x.size(1) != in || x.dataType() != dataType()) {
            throw new IllegalArgumentException("input must be [n, " + in + ", h, w] of " + dataType() + ", got "
                    + Arrays.toString(x.shape()) + " of " + x.dataType());
        }
        long n = x.size(0);
        long oh = (x.size(2) + 2L * padding[0] - kh) / stride[0] + 1;
        long ow = (x.size(3) + 2L * padding[1] - kw) / stride[1] + 1;
        if (x.size(2) + 2L * padding[0] < kh || x.size(3) + 2L * padding[1] < kw) {
            throw new IllegalArgumentException("input " + Arrays.toString(x.shape()) + " with padding "
                    + Arrays.toString(padding) + " is smaller than the kernel " + kh + "x" + kw);
        }
        checkWorkingMemory(x, n, oh, ow);
        // im2col: [n, in, kh, kw, oh, ow] -> cols [n·oh·ow, in·kh·kw]
        // (ND4J's im2col without an output array makes it FLOAT whatever the input: give it one of x's type.)
        INDArray unfolded = Nd4j.create(dataType(), n, in, kh, kw, oh, ow);
        Convolution.im2col(x, kh, kw, stride[0], stride[1], padding[0], padding[1], 1, 1, false, unfolded);
        INDArray cols = unfolded.permute(0, 4, 5, 1, 2, 3).dup('c').reshape('c', n * oh * ow, in * kh * kw);
        INDArray y = delegate.forward(cols); // [n·oh·ow, out]
        return y.reshape('c', n, oh, ow, out).permute(0, 3, 1, 2).dup('c');
    }

    /**
     * Refuses, before anything is allocated, a forward whose buffers cannot exist: the im2col matrix
     * {@code cols [n·oh·ow, in·kh·kw]} goes to BLAS, whose dimensions are {@code int}s, and the forward holds it twice
     * (unfolded, then permuted) beside the output twice. A huge padding (or input) would otherwise end in a native
     * allocation failure, or in an overflowed length.
     */
    private void checkWorkingMemory(INDArray x, long n, long oh, long ow) {
        long rows = product(n, oh, ow);
        long cols = product(in, kh, kw);
        long unfolded = product(rows, cols);
        long output = product(rows, out);
        long elements = unfolded > Long.MAX_VALUE - output ? Long.MAX_VALUE : unfolded + output;
        long bytes = product(2, elements, dataType().width());
        long physical = Machine.MEMORY;
        if (rows > Integer.MAX_VALUE || cols > Integer.MAX_VALUE || (physical > 0 && bytes > physical)) {
            throw new IllegalArgumentException("input " + Arrays.toString(x.shape()) + " with padding "
                    + Arrays.toString(padding) + " and stride " + Arrays.toString(stride) + " gives an output of "
                    + oh + "x" + ow + ": its im2col matrix [n·oh·ow, in·kh·kw] = [" + rows + ", " + cols + "] "
                    + (rows > Integer.MAX_VALUE || cols > Integer.MAX_VALUE
                    ? "exceeds BLAS's dimension limit of " + Integer.MAX_VALUE
                    : "and the output need " + bytes + " bytes, more than this machine's " + physical
                    + " bytes of memory") + "; expected a smaller padding, input or batch");
        }
    }

    /** {@code a·b·...}, or {@link Long#MAX_VALUE} if it overflows; the factors are not negative. */
    private static long product(long... factors) {
        long p = 1;
        for (long f : factors) {
            if (f != 0 && p > Long.MAX_VALUE / f) {
                return Long.MAX_VALUE;
            }
            p *= f;
        }
        return p;
    }

    /** The machine's physical memory in bytes (0 where JavaCPP cannot tell), read once: a native call. */
    private static final class Machine {
        static final long MEMORY = physicalMemory();

        private static long physicalMemory() {
            try {
                return org.bytedeco.javacpp.Pointer.totalPhysicalBytes();
            } catch (LinkageError e) {
                return 0;
            }
        }
    }

    /**
     * Merges the active adapter into the kernel the {@link MergeMode#EXACT exact} way, so that {@link #unmerge()}
     * restores it bit for bit; see {@link LoraLinear#merge()}.
     *
     * @throws IllegalStateException as {@link #merge(MergeMode)} does; the kernel is then unchanged
     */
    public void merge() {
        delegate.merge();
    }

    /**
     * {@code W += ΔW} with the active adapter, in place; see {@link LoraLinear#merge(MergeMode)}. Forward is then the
     * plain convolution with the merged kernel; changing the merged adapter's weights or scale is refused until
     * {@link #unmerge()}.
     *
     * @param mode {@link MergeMode#EXACT} (unmerge restores the kernel bit for bit) or {@link MergeMode#FAST}
     * @throws NullPointerException  if {@code mode} is null
     * @throws IllegalStateException if an adapter is already merged, none is active, adapters are disabled, or
     *                               {@code A}, {@code B} or the result is not finite; the kernel is then unchanged
     */
    public void merge(MergeMode mode) {
        delegate.merge(mode);
    }

    /**
     * Subtracts the merged update again: after an exact merge the kernel is bitwise what it was, after a fast one to
     * an ulp of the merged values.
     *
     * @throws IllegalStateException if nothing is merged
     */
    public void unmerge() {
        delegate.unmerge();
    }

    /**
     * PEFT's {@code merge_and_unload} for this layer: merges the active adapter (exact way) unless one is merged, then
     * keeps the update in the kernel for good and deletes every adapter; see {@link LoraLinear#mergeAndUnload()}.
     *
     * @throws IllegalStateException as {@link #merge(MergeMode)}, if the merge is refused; nothing is changed then
     */
    public void mergeAndUnload() {
        delegate.mergeAndUnload();
    }

    /**
     * Whether an adapter is merged into the kernel.
     *
     * @return true between a successful {@link #merge()} and {@link #unmerge()}
     */
    public boolean isMerged() {
        return delegate.isMerged();
    }

    /**
     * The kernel with the active adapter's update, without touching the layer (PEFT's {@code merge_and_unload}).
     *
     * @return a new array {@code [out, in, kh, kw]}, {@code W + ΔW}; a copy of the kernel when no adapter is active,
     *         adapters are disabled, or the adapter is already merged (the kernel then holds the update); bit for bit what an EXACT merge writes
     * @throws IllegalStateException if an element would be NaN or infinite (named in the message)
     */
    public INDArray mergedWeight() {
        return delegate.mergedWeight().reshape('c', out, in, kh, kw);
    }

    /**
     * The layer kind.
     *
     * @return {@link LoraModule.Kind#CONV2D}
     */
    @Override
    public LoraModule.Kind kind() {
        return LoraModule.Kind.CONV2D;
    }

    @Override
    public String toString() {
        return "LoraConv2d{" + out + "x" + in + "x" + kh + "x" + kw + ", stride=" + Arrays.toString(stride)
                + ", padding=" + Arrays.toString(padding) + ", adapters=" + adapterNames() + ", active="
                + activeAdapter() + ", merged=" + isMerged() + "}";
    }
}
