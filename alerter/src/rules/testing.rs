pub struct TestReport; pub struct TestError; pub fn run_test_file(){}
