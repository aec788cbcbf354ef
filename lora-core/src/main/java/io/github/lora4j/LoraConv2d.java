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
public final class LoraConv2d {

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
     * @param padding {@code {ph, pw}} zero padding, each at least 0
     * @throws IllegalArgumentException naming the offending argument
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

    /** Input channels. */
    public long inChannels() {
        return in;
    }

    /** Output channels. */
    public long outChannels() {
        return out;
    }

    /** {@code {kh, kw}}. */
    public int[] kernelSize() {
        return new int[] {kh, kw};
    }

    /** FLOAT or DOUBLE. */
    public DataType dataType() {
        return delegate.dataType();
    }

    /** The live kernel {@code [out, in, kh, kw]} (merged adapters included); do not modify it. */
    public INDArray weight() {
        return weight;
    }

    /** The frozen bias as {@code [1, out]} (a view of the caller's array), or null. */
    public INDArray bias() {
        return delegate.bias();
    }

    /** A copy of the stride {@code {sy, sx}}. */
    public int[] stride() {
        return stride.clone();
    }

    /** A copy of the zero padding {@code {ph, pw}}. */
    public int[] padding() {
        return padding.clone();
    }

    /** Parameters of the kernel, the bias and every adapter. */
    public long totalParameterCount() {
        return delegate.totalParameterCount();
    }

    /** {@code r·(in·kh·kw + out)} of the active adapter, or 0. */
    public long trainableParameterCount() {
        return delegate.trainableParameterCount();
    }

    /**
     * Adds an adapter initialised as PEFT does ({@code A} kaiming-uniform over {@code fan_in = in·kh·kw},
     * {@code B = 0}); the active adapter does not change.
     *
     * @throws IllegalArgumentException if the name is blank or taken, or {@code r > min(in·kh·kw, out)}
     */
    public void addAdapter(String name, LoraConfig config) {
        delegate.addAdapter(name, config);
    }

    /** Makes {@code name} the adapter used by forward and merge; see {@link LoraLinear#setActiveAdapter}. */
    public void setActiveAdapter(String name) {
        delegate.setActiveAdapter(name);
    }

    /** The active adapter, or null. */
    public String activeAdapter() {
        return delegate.activeAdapter();
    }

    /** Adapter names, in the order they were added. */
    public List<String> adapterNames() {
        return delegate.adapterNames();
    }

    /** Removes an adapter; refused while it is merged. */
    public void deleteAdapter(String name) {
        delegate.deleteAdapter(name);
    }

    /**
     * Sets the run-time scale of adapter {@code name}: {@code s' = scale·alpha / r}; see
     * {@link LoraLinear#setAdapterScale}.
     *
     * @throws IllegalArgumentException for an unknown name or a scale giving a non-finite {@code s'}
     * @throws IllegalStateException    while that adapter is merged
     */
    public void setAdapterScale(String name, double scale) {
        delegate.setAdapterScale(name, scale);
    }

    /** The adapter {@code name} ({@code A} and {@code B} flattened to {@code [r, in·kh·kw]} and {@code [out, r]}). */
    public LoraAdapter adapter(String name) {
        return delegate.adapter(name);
    }

    /** Turns adapters off: {@link #forward} is then the plain convolution; refused while merged. */
    public void disableAdapters() {
        delegate.disableAdapters();
    }

    /** Turns adapters back on. */
    public void enableAdapters() {
        delegate.enableAdapters();
    }

    /** Whether adapters take part in the forward pass. */
    public boolean adaptersEnabled() {
        return delegate.adaptersEnabled();
    }

    /** The configuration adapter {@code name} was made with. */
    public LoraConfig adapterConfig(String name) {
        return delegate.adapter(name).config();
    }

    /** The scaling {@code s} of adapter {@code name}. */
    public double scaling(String name) {
        return delegate.adapter(name).scaling();
    }

    /** A copy of {@code A [r, in, kh, kw]} of adapter {@code name}. */
    public INDArray loraA(String name) {
        INDArray a = delegate.loraA(name);
        return a.dup('c').reshape('c', a.size(0), in, kh, kw);
    }

    /** A copy of {@code B [out, r, 1, 1]} of adapter {@code name}. */
    public INDArray loraB(String name) {
        INDArray b = delegate.loraB(name);
        return b.dup('c').reshape('c', out, b.size(1), 1, 1);
    }

    /**
     * Copies {@code a [r, in, kh, kw]} and {@code b [out, r, 1, 1]} into adapter {@code name}.
     *
     * @throws IllegalArgumentException for an unknown name, a wrong shape or type, or a non-finite value
     * @throws IllegalStateException    while that adapter is merged
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
     * @param x {@code [n, in, h, w]} of the kernel's type
     * @return a new array {@code [n, out, oh, ow]}
     * @throws IllegalArgumentException for a wrong shape or type, or an input smaller than the kernel
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
        // im2col: [n, in, kh, kw, oh, ow] -> cols [n·oh·ow, in·kh·kw]
        // (ND4J's im2col without an output array makes it FLOAT whatever the input: give it one of x's type.)
        INDArray unfolded = Nd4j.create(dataType(), n, in, kh, kw, oh, ow);
        Convolution.im2col(x, kh, kw, stride[0], stride[1], padding[0], padding[1], 1, 1, false, unfolded);
        INDArray cols = unfolded.permute(0, 4, 5, 1, 2, 3).dup('c').reshape('c', n * oh * ow, in * kh * kw);
        INDArray y = delegate.forward(cols); // [n·oh·ow, out]
        return y.reshape('c', n, oh, ow, out).permute(0, 3, 1, 2).dup('c');
    }

    /** Merges the active adapter into the kernel, the exact way; see {@link LoraLinear#merge()}. */
    public void merge() {
        delegate.merge();
    }

    /** Merges with {@code mode}; see {@link LoraLinear#merge(MergeMode)}. */
    public void merge(MergeMode mode) {
        delegate.merge(mode);
    }

    /** Unmerges; after an exact merge the kernel is bitwise what it was. */
    public void unmerge() {
        delegate.unmerge();
    }

    /** Whether an adapter is merged. */
    public boolean isMerged() {
        return delegate.isMerged();
    }

    /** A new kernel {@code [out, in, kh, kw]}: {@code W + ΔW} of the active adapter. */
    public INDArray mergedWeight() {
        return delegate.mergedWeight().reshape('c', out, in, kh, kw);
    }

    @Override
    public String toString() {
        return "LoraConv2d{" + out + "x" + in + "x" + kh + "x" + kw + ", stride=" + Arrays.toString(stride)
                + ", padding=" + Arrays.toString(padding) + ", adapters=" + adapterNames() + ", active="
                + activeAdapter() + ", merged=" + isMerged() + "}";
    }
}
