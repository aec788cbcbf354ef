package io.github.lora4j.dl4j;

import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.layers.BaseLayer;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.nd4j.common.primitives.Pair;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The layer of a {@link LoraDenseLayer}: {@code activation(x W + b + s·(dropout(x) loraAᵀ) loraBᵀ)}. Its backward
 * writes the gradients of {@code loraA} and {@code loraB} only and returns {@code dL/dx}; it never computes {@code dW}
 * or {@code db}, whose gradient views stay zero (and whose NoOp updater therefore leaves them bitwise unchanged). The
 * arithmetic is {@link LoraOps}'s; this class passes DL4J's protected input, parameters and mask to it.
 */
public class LoraDenseLayerImpl extends BaseLayer<LoraDenseLayer> implements LoraLayer {

    private static final long serialVersionUID = 1L;

    private transient LoraOps ops;

    /**
     * @param conf     the layer's configuration, holding a {@link LoraDenseLayer}
     * @param dataType the network's data type
     */
    public LoraDenseLayerImpl(NeuralNetConfiguration conf, DataType dataType) {
        super(conf, dataType);
    }

    @Override
    public LoraOps ops() {
        if (ops == null) {
            ops = new LoraOps(layerConf());
        }
        return ops;
    }

    @Override
    public void setInput(INDArray input, LayerWorkspaceMgr workspaceMgr) {
        super.setInput(input, workspaceMgr);
        ops().newInput();
    }

    @Override
    public void clear() {
        super.clear();
        ops().newInput();
    }

    @Override
    protected Pair<INDArray, INDArray> preOutputWithPreNorm(boolean training, boolean forBackprop,
            LayerWorkspaceMgr workspaceMgr) {
        INDArray z = forward(training, forBackprop, workspaceMgr).z();
        return new Pair<>(z, z);
    }

    private LoraOps.Forward forward(boolean training, boolean forBackprop, LayerWorkspaceMgr workspaceMgr) {
        assertInputSet(forBackprop);
        applyDropOutIfNecessary(training, workspaceMgr);
        LoraOps.Forward f = ops().forward(input, params, training, forBackprop, workspaceMgr, layerId());
        if (maskArray != null) {
            applyMask(f.z());
        }
        return f;
    }

    @Override
    public Pair<Gradient, INDArray> backpropGradient(INDArray epsilon, LayerWorkspaceMgr workspaceMgr) {
        LoraOps.Forward f = forward(true, true, workspaceMgr);
        INDArray delta = layerConf().getActivationFn().backprop(f.z(), epsilon).getFirst();
        if (maskArray != null) {
            applyMask(delta);
        }
        Pair<Gradient, INDArray> back = ops().backward(f, delta, params, gradientViews, workspaceMgr, layerId());
        return new Pair<>(back.getFirst(), backpropDropOutIfPresent(back.getSecond()));
    }

    @Override
    public void fit(INDArray input, LayerWorkspaceMgr workspaceMgr) {
        throw new UnsupportedOperationException("a LoRA dense layer is trained through its network's fit()");
    }

    @Override
    public boolean isPretrainLayer() {
        return false;
    }

    @Override
    public boolean hasBias() {
        return layerConf().hasBias();   // DL4J's BaseLayer says true for every layer
    }
}
