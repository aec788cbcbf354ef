package io.github.lora4j.dl4j;

import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.layers.BaseOutputLayer;
import org.deeplearning4j.nn.workspace.ArrayType;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.nd4j.common.primitives.Pair;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The layer of a {@link LoraOutputLayer}: {@code activation(x W + b + s·(dropout(x) loraAᵀ) loraBᵀ)} scored by the
 * base layer's loss. Its backward writes the gradients of {@code loraA} and {@code loraB} only and returns
 * {@code dL/dx}; it never computes {@code dW} or {@code db}. The arithmetic is {@link LoraOps}'s.
 */
public class LoraOutputLayerImpl extends BaseOutputLayer<LoraOutputLayer> implements LoraLayer {

    private static final long serialVersionUID = 1L;

    private transient LoraOps ops;

    /**
     * @param conf     the layer's configuration, holding a {@link LoraOutputLayer}
     * @param dataType the network's data type
     */
    public LoraOutputLayerImpl(NeuralNetConfiguration conf, DataType dataType) {
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
    protected INDArray getLabels2d(LayerWorkspaceMgr workspaceMgr, ArrayType arrayType) {
        return labels;
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
        INDArray delta = layerConf().getLossFn().computeGradient(getLabels2d(workspaceMgr, ArrayType.BP_WORKING_MEM),
                f.z(), layerConf().getActivationFn(), maskArray);
        Pair<Gradient, INDArray> back = ops().backward(f, delta, params, gradientViews, workspaceMgr, layerId());
        return new Pair<>(back.getFirst(), backpropDropOutIfPresent(back.getSecond()));
    }

    @Override
    public void computeGradientAndScore(LayerWorkspaceMgr workspaceMgr) {
        if (input == null || labels == null) {
            return;
        }
        this.gradient = backpropGradient(null, workspaceMgr).getFirst();
        this.score = computeScore(0.0, true, workspaceMgr);
    }
}
