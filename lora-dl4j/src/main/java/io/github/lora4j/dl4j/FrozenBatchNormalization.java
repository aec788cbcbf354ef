package io.github.lora4j.dl4j;

import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.BatchNormalization;
import org.deeplearning4j.nn.conf.layers.Layer;
import org.deeplearning4j.nn.conf.layers.LayerValidation;
import org.deeplearning4j.optimize.api.TrainingListener;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.config.NoOp;
import org.nd4j.linalg.learning.regularization.Regularization;

/**
 * A DL4J {@link BatchNormalization} frozen for LoRA training, made by {@link LoraDl4j#apply} for an untargeted one:
 * the affine map {@code y = γ·(x − μ)/√(σ² + ε) + β} with DL4J's stored running mean {@code μ} and variance
 * {@code σ²} (or log-std), in training as in inference. Its forward is DL4J's own inference forward, bit for bit; its
 * backward passes {@code dL/dx = dL/dy · γ/√(σ² + ε)} (per channel) and writes no gradient.
 *
 * <p>Why a class of its own: DL4J's BatchNormalization updates {@code μ} and {@code σ²} in {@code fit()} through its
 * gradient, with a NoOp updater (its backprop writes {@code (1 − decay)·(μ − batch mean)} into the gradient view of
 * {@code μ}, which the step subtracts), so a NoOp updater does not freeze them; and DL4J's
 * {@code FrozenLayerWithBackprop} runs it in inference mode but backpropagates with the training-mode formula. Here no
 * gradient view is ever written (the step subtracts 0: every parameter stays bitwise unchanged), all updaters are NoOp
 * (no updater state), regularization is off, and the gradient is that of the function computed. Adapters upstream
 * therefore train against the map the network applies at inference. {@link LoraDl4j#mergeAndUnload} gives the
 * original layer back ({@link #getBase()}).
 */
public class FrozenBatchNormalization extends BatchNormalization {

    private static final long serialVersionUID = 1L;

    /** The layer as the network had it (a BatchNormalization, or a frozen wrapper around one). */
    private Layer base;

    /** For JSON. */
    public FrozenBatchNormalization() {
    }

    /**
     * The frozen form of {@code bn}.
     *
     * @param bn       DL4J's layer; its settings are copied (updaters become NoOp, regularization and dropout off)
     * @param original the layer as the network has it ({@code bn} or a frozen wrapper around it), kept for
     *                 {@link LoraDl4j#mergeAndUnload}; copied
     */
    public FrozenBatchNormalization(BatchNormalization bn, Layer original) {
        Objects.requireNonNull(bn, "bn must not be null");
        this.base = Objects.requireNonNull(original, "original must not be null").clone();
        setLayerName(bn.getLayerName());
        setNIn(bn.getNIn());
        setNOut(bn.getNOut());
        setActivationFn(bn.getActivationFn());
        setWeightInitFn(bn.getWeightInitFn());
        setBiasInit(bn.getBiasInit());
        setGainInit(bn.getGainInit());
        setGradientNormalization(bn.getGradientNormalization());
        setGradientNormalizationThreshold(bn.getGradientNormalizationThreshold());
        setTimeDistributedFormat(bn.getTimeDistributedFormat());
        setDecay(bn.getDecay());
        setEps(bn.getEps());
        setMinibatch(bn.isMinibatch());
        setGamma(bn.getGamma());
        setBeta(bn.getBeta());
        setLockGammaBeta(bn.isLockGammaBeta());
        setCudnnAllowFallback(bn.isCudnnAllowFallback());
        setUseLogStd(bn.isUseLogStd());
        setCnn2DFormat(bn.getCnn2DFormat());
        setIUpdater(new NoOp());
        setBiasUpdater(new NoOp());
        setRegularization(Collections.emptyList());
        setRegularizationBias(Collections.emptyList());
    }

    @Override
    public org.deeplearning4j.nn.api.Layer instantiate(NeuralNetConfiguration conf,
            Collection<TrainingListener> trainingListeners, int layerIndex, INDArray layerParamsView,
            boolean initializeParams, DataType networkDataType) {
        LayerValidation.assertNOutSet("FrozenBatchNormalization", getLayerName(), layerIndex, getNOut());
        FrozenBatchNormalizationImpl layer = new FrozenBatchNormalizationImpl(conf, networkDataType);
        layer.setListeners(trainingListeners);
        layer.setIndex(layerIndex);
        layer.setParamsViewArray(layerParamsView);
        Map<String, INDArray> params = initializer().init(conf, layerParamsView, initializeParams);
        layer.setParamTable(params);
        layer.setConf(conf);
        return layer;
    }

    /** Every parameter, running statistics included: NoOp (no updater state; their gradient is never written). */
    @Override
    public IUpdater getUpdaterByParam(String paramName) {
        return new NoOp();
    }

    @Override
    public List<Regularization> getRegularizationByParam(String paramName) {
        return Collections.emptyList();
    }

    /**
     * The layer as the network had it before {@link LoraDl4j#apply}.
     *
     * @return the configuration held here (not a copy)
     */
    public Layer getBase() {
        return base;
    }

    /** @param base the layer as the network had it (for JSON) */
    public void setBase(Layer base) {
        this.base = base;
    }

    @Override
    public FrozenBatchNormalization clone() {
        FrozenBatchNormalization c = (FrozenBatchNormalization) super.clone();
        c.base = base == null ? null : base.clone();
        return c;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof FrozenBatchNormalization && super.equals(o)
                && Objects.equals(base, ((FrozenBatchNormalization) o).base);
    }

    @Override
    public int hashCode() {
        return Objects.hash(super.hashCode(), base);
    }
}
