// Calls a KVM agent hook the way CloudStack's LibvirtKvmAgentHook does:
// GroovyScriptEngine(basedir).run(script, binding), then <method>(logger, arg) on the result.
// usage: groovy kvm_agent_harness.groovy <basedir> <script> <method> <arg-file>
class Logger {
    void debug(Object m) { System.err.println("DEBUG " + m) }
    void info(Object m) { System.err.println("INFO " + m) }
    void warn(Object m) { System.err.println("WARN " + m) }
    void error(Object m) { System.err.println("ERROR " + m) }
}
def gse = new GroovyScriptEngine(args[0])
def hook = (GroovyObject) gse.run(args[1], new Binding())
Object[] params = [new Logger(), new File(args[3]).getText('UTF-8')]
def result = hook.invokeMethod(args[2], params)
if (result == null) {
    System.out.print('<<NULL>>')
} else {
    System.out.print(result)
}
